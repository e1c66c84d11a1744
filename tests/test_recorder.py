"""
Tests for L{imageproto.features.recording}: real PyAV writing real JPEGs
the tests make, read back with PyAV.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import LogLevel, capturedLogs
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto.features.recording import (
    Recorder,
    Timeline,
    jpegSize,
    segmentName,
)
from imageproto.features.recording.media import UndecodableFrame
from imageproto.receiver.consumers import ReceivedFrame
from imageproto.tap import freePort, twistdCommand
from imageproto.testing import waitFor
from tests.helpers import FakeThreads, makeJpeg
from tests.helpers.processes import stopWithin

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

try:
    import av
except ImportError:  # pragma: no cover
    av = None

# Mid-November 2023, on the sender's clock.
T0 = 1_700_000_000.0
FPS = 25


def badPrecisionJpeg() -> bytes:
    """
    A JPEG whose frame header reads but declares 0-bit samples, which
    FFmpeg's decoder refuses.
    """
    jpeg = bytearray(makeJpeg(number=1))
    jpeg[jpeg.index(b"\xff\xc0") + 4] = 0
    return bytes(jpeg)


def frame(stream, seq, captureTime, jpeg, receiveTime=None) -> ReceivedFrame:
    """
    A frame captured at C{captureTime} on the sender's clock and received
    10 ms later on ours unless C{receiveTime} says otherwise.
    """
    if receiveTime is None:
        receiveTime = captureTime + 0.01
    return ReceivedFrame(stream, seq, captureTime, captureTime, receiveTime, jpeg, 0)


def clip() -> list[tuple[float, float, bytes]]:
    """
    C{(captureTime, receiveTime, jpeg)} of 2 s at 25 fps, a 3 s pause, then
    1 s more; received with jitter of up to 30 ms (and 200 ms late once, a
    burst after a stall), so receive times alone would get the pacing wrong.
    """
    frames = []
    for i in range(75):
        capture = T0 + i / FPS + (3.0 if i >= 50 else 0.0)
        receive = capture + 0.05 + ((i * 7) % 4) * 0.01 + (0.2 if i == 30 else 0.0)
        frames.append((capture, receive, makeJpeg(number=i)))
    return frames


def _readAll(items, truncated: bool) -> list:
    """
    C{list(items)}, or, for a file cut short by a kill, the items read
    before FFmpeg found the end broken (a player stops there too).
    """
    result = []
    try:
        for item in items:
            result.append(item)
    except av.FFmpegError:
        if not truncated:
            raise
    return result


def packets(path: str, truncated: bool = False) -> list[tuple[float, bytes]]:
    """
    C{(seconds, bytes)} of every packet of a file's video stream, in order.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        return _readAll(
            (
                (float(p.pts * p.time_base), bytes(p))
                for p in container.demux(stream)
                if p.size
            ),
            truncated,
        )


def pictures(path: str, truncated: bool = False) -> list:
    """
    Every decoded picture of a file as C{(seconds, width, height, format,
    codec)}.
    """
    with av.open(path) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        return _readAll(
            (
                (float(f.pts * f.time_base), f.width, f.height, f.format.name, codec)
                for f in container.decode(stream)
            ),
            truncated,
        )


class FakeWriter:
    def __init__(self, format, path, size) -> None:
        self.format, self.path, self.size = format, path, size
        self.written = []
        self.closed = False

    def write(self, jpeg, pts) -> None:
        assert not self.closed
        self.written.append((pts, jpeg))

    def close(self) -> None:
        self.closed = True


class _RecorderCase(SynchronousTestCase):
    def setUp(self) -> None:
        if cv2 is None or av is None:
            raise self.skipTest("cv2 and av (PyAV) are needed to make and read recordings")
        self.directory = self.mktemp()
        self.thread = FakeThreads()

    def recorder(self, **kwargs) -> Recorder:
        recorder = Recorder(self.directory, runInThread=self.thread, **kwargs)
        recorder.startService()
        return recorder

    def stop(self, recorder: Recorder):
        d = recorder.stopService()
        self.thread.runAll()
        return self.successResultOf(d)

    def files(self) -> list[str]:
        return sorted(
            os.path.join(self.directory, n) for n in os.listdir(self.directory)
        )

    def recordClip(self, recorder: Recorder) -> tuple[list, list]:
        """
        Record L{clip} as one session of C{cam1}, then a second session of
        20 frames 10 s after the first began.
        """
        first = clip()
        second = [
            (T0 + 10 + i / FPS, T0 + 10.05 + i / FPS, makeJpeg(number=100 + i))
            for i in range(20)
        ]
        recorder.streamStarted("cam1")
        for seq, (capture, receive, jpeg) in enumerate(first):
            recorder.frameReceived(frame("cam1", seq, capture, jpeg, receive))
        recorder.streamStopped("cam1")
        recorder.streamStarted("cam1")
        for seq, (capture, receive, jpeg) in enumerate(second):
            recorder.frameReceived(frame("cam1", seq, capture, jpeg, receive))
        recorder.streamStopped("cam1")
        self.stop(recorder)
        return first, second

    def assertTimes(self, times, session) -> None:
        """
        Each frame's time in the file is its capture time less the first
        frame's, within 1 ms.
        """
        self.assertEqual(len(times), len(session))
        start = session[0][0]
        errors = [abs(t - (capture - start)) for t, (capture, _, _) in zip(times, session)]
        self.assertLessEqual(max(errors), 0.001)


class MatroskaTests(_RecorderCase):
    def test_jpegsAsSentAtCaptureTimes(self) -> None:
        """
        In the default format each session of a stream becomes one Matroska
        file whose packets are the JPEG bytes exactly as sent, every one of
        them, each at its capture time (relative to the file's first frame,
        within 1 ms): the 3 s pause is kept, and the receive times' jitter
        is not.
        """
        recorder = self.recorder()
        first, second = self.recordClip(recorder)
        paths = self.files()
        self.assertEqual(
            [os.path.basename(p) for p in paths],
            [segmentName("cam1", first[0][1]), segmentName("cam1", second[0][1])],
        )
        self.assertTrue(paths[0].endswith(".mkv"))
        for path, session in zip(paths, (first, second)):
            read = packets(path)
            self.assertEqual([data for _, data in read], [jpeg for _, _, jpeg in session])
            self.assertTimes([t for t, _ in read], session)
        times = [t for t, _ in packets(paths[0])]
        self.assertAlmostEqual(times[50] - times[49], 3.04, delta=0.001)
        self.assertEqual(
            recorder.stats()["cam1"],
            {
                "queued": 95,
                "dropped": 0,
                "written": 95,
                "failed": 0,
                "retimed": 0,
                "segments": 2,
                "file": None,
                "format": "mkv",
            },
        )

    def test_playsBack(self) -> None:
        """
        FFmpeg's MJPEG decoder (what VLC, mpv and ffplay use) decodes every
        frame of the file, at the sent size.
        """
        recorder = self.recorder()
        first, _ = self.recordClip(recorder)
        decoded = pictures(self.files()[0])
        self.assertEqual(len(decoded), len(first))
        self.assertEqual({d[1:3] + (d[4],) for d in decoded}, {(64, 48, "mjpeg")})
        self.assertTimes([d[0] for d in decoded], first)

    def test_fullQueueDropsAndCounts(self) -> None:
        """
        While the writer is stalled (a slow disk), frames beyond the queue's
        bound are dropped and counted at once instead of waiting; the queued
        ones are all written afterwards.
        """
        recorder = self.recorder(maxQueued=5)
        for seq in range(20):
            self.assertIsNone(
                recorder.frameReceived(frame("cam1", seq, T0 + seq * 0.1, makeJpeg(number=seq)))
            )
        self.assertEqual(recorder.stats()["cam1"]["queued"], 5)
        self.assertEqual(recorder.stats()["cam1"]["dropped"], 15)
        self.stop(recorder)
        [path] = self.files()
        self.assertEqual(len(packets(path)), 5)
        self.assertEqual(recorder.stats()["cam1"]["written"], 5)

    def test_segments(self) -> None:
        """
        A stream is split into files of at most C{segmentSeconds} of video,
        each named by the stream and its first frame's receive time and
        starting at time 0, together holding every frame.
        """
        recorder = self.recorder(segmentSeconds=2.0)
        for seq in range(10):
            recorder.frameReceived(frame("cam1", seq, T0 + seq * 0.5, makeJpeg(number=seq)))
        self.stop(recorder)
        paths = self.files()
        self.assertEqual(
            [os.path.basename(p) for p in paths],
            [segmentName("cam1", T0 + t + 0.01) for t in (0, 2, 4)],
        )
        self.assertEqual(
            [[t for t, _ in packets(p)] for p in paths],
            [[0, 0.5, 1.0, 1.5], [0, 0.5, 1.0, 1.5], [0, 0.5]],
        )
        self.assertEqual(recorder.stats()["cam1"]["segments"], 3)

    def test_streamStoppedFinishesFile(self) -> None:
        """
        When a stream stops its file is closed (finished) at once, and its
        next frame begins a new file starting at time 0.
        """
        writers = []

        def openWriter(format, path, size):
            writers.append(FakeWriter(format, path, size))
            return writers[-1]

        recorder = self.recorder(openWriter=openWriter)
        recorder.frameReceived(frame("cam1", 0, T0, makeJpeg(number=1)))
        recorder.frameReceived(frame("cam1", 1, T0 + 0.1, makeJpeg(number=2)))
        recorder.streamStopped("cam1")
        recorder.frameReceived(frame("cam1", 2, T0 + 10, makeJpeg(number=3)))
        recorder.stopService()
        [(f, args, d)] = self.thread.calls
        f(*args)
        self.assertEqual(
            [[pts for pts, _ in w.written] for w in writers], [[0, 100], [0]]
        )
        self.assertTrue(all(w.closed for w in writers))
        self.assertEqual({(w.format, w.size) for w in writers}, {("mkv", (64, 48))})

    def test_sizeChangeStartsNewFile(self) -> None:
        """
        A frame of a different size than the open file's starts a new file
        (a video track has one frame size).
        """
        recorder = self.recorder()
        recorder.frameReceived(frame("cam1", 0, T0, makeJpeg(number=1)))
        recorder.frameReceived(frame("cam1", 1, T0 + 0.1, makeJpeg(number=2)))
        recorder.frameReceived(frame("cam1", 2, T0 + 0.2, makeJpeg(32, 24, number=3)))
        self.stop(recorder)
        first = segmentName("cam1", T0 + 0.01)
        second = first[: -len(".mkv")] + "-2.mkv"
        self.assertEqual({os.path.basename(p) for p in self.files()}, {first, second})
        sizes = [
            {d[1:3] for d in pictures(os.path.join(self.directory, name))}
            for name in (first, second)
        ]
        self.assertEqual(sizes, [{(64, 48)}, {(32, 24)}])

    def test_undecodableFrameCounted(self) -> None:
        """
        A frame that is not a JPEG is skipped, counted as failed and logged
        naming the stream; the recording goes on.
        """
        recorder = self.recorder()
        recorder.frameReceived(frame("cam1", 0, T0, makeJpeg(number=1)))
        recorder.frameReceived(frame("cam1", 1, T0 + 0.1, b"\xff\xd8\xff not a jpeg \xff\xd9"))
        recorder.frameReceived(frame("cam1", 2, T0 + 0.2, makeJpeg(number=2)))
        with capturedLogs() as events:
            self.stop(recorder)
        self.assertEqual(recorder.stats()["cam1"]["failed"], 1)
        self.assertEqual([t for t, _ in packets(self.files()[0])], [0, 0.2])
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual([(e["stream"], e["seq"]) for e in warnings], [("cam1", 1)])

    def test_framesAfterStopDropped(self) -> None:
        """
        Frames arriving after the recorder stopped are not queued but
        counted as dropped, and the stop logs each stream's counts.
        """
        recorder = self.recorder()
        recorder.frameReceived(frame("cam1", 0, T0, makeJpeg(number=1)))
        with capturedLogs() as events:
            self.stop(recorder)
        recorder.frameReceived(frame("cam1", 1, T0 + 0.1, makeJpeg(number=2)))
        self.assertEqual(recorder.stats()["cam1"]["dropped"], 1)
        self.assertEqual(recorder.stats()["cam1"]["written"], 1)
        [summary] = [e for e in events if "frames queued" in e["log_format"]]
        self.assertEqual((summary["stream"], summary["queued"], summary["written"]), ("cam1", 1, 1))

    def test_severalStreams(self) -> None:
        """
        Each stream has its own files.
        """
        recorder = self.recorder()
        for seq in range(3):
            recorder.frameReceived(frame("a", seq, T0 + seq * 0.1, makeJpeg(number=seq)))
            recorder.frameReceived(frame("b", seq, T0 + seq * 0.1, makeJpeg(number=seq)))
        self.stop(recorder)
        self.assertEqual(
            [os.path.basename(p) for p in self.files()],
            [segmentName("a", T0 + 0.01), segmentName("b", T0 + 0.01)],
        )

    def test_badCaptureClockRetimed(self) -> None:
        """
        Frames whose capture time goes backwards or leaps ahead are placed
        by receive time (and counted as retimed); the file's times still
        increase, and the frames after them keep their capture spacing.
        """
        recorder = self.recorder()
        captures = [T0, T0 + 0.04, T0 - 100, T0 + 3600, T0 + 3600.04]
        for seq, capture in enumerate(captures):
            recorder.frameReceived(frame("cam1", seq, capture, makeJpeg(number=seq), T0 + seq * 0.1))
        self.stop(recorder)
        self.assertEqual(
            [t for t, _ in packets(self.files()[0])], [0, 0.04, 0.14, 0.24, 0.28]
        )
        self.assertEqual(recorder.stats()["cam1"]["retimed"], 2)

    def test_unknownFormat(self) -> None:
        """
        A recorder asked for a format it does not know refuses to start.
        """
        recorder = Recorder(self.directory, format="avi", runInThread=self.thread)
        self.assertRaises(ValueError, recorder.startService)

    def test_segmentName(self) -> None:
        """
        Segment names carry the stream (unsafe characters replaced), the
        UTC start time and the format's extension.
        """
        self.assertEqual(segmentName("cam1", 0), "cam1-19700101T000000Z.mkv")
        self.assertEqual(segmentName("cam1", 0, "mp4"), "cam1-19700101T000000Z.mp4")
        self.assertEqual(segmentName("../a b/c", 86400), "_a_b_c-19700102T000000Z.mkv")


class H264Tests(_RecorderCase):
    def test_h264AtCaptureTimes(self) -> None:
        """
        C{format="mp4"} writes each session as an H.264 (yuv420p) MP4 that
        PyAV decodes: every frame, each at its capture time within 1 ms,
        the pause kept.  Odd frame sizes are rounded down to even ones.
        """
        recorder = self.recorder(format="mp4")
        first, second = self.recordClip(recorder)
        paths = self.files()
        self.assertEqual(
            [os.path.basename(p) for p in paths],
            [segmentName("cam1", first[0][1], "mp4"), segmentName("cam1", second[0][1], "mp4")],
        )
        for path, session in zip(paths, (first, second)):
            decoded = pictures(path)
            self.assertEqual(
                {d[1:] for d in decoded}, {(64, 48, "yuv420p", "h264")}
            )
            self.assertTimes([d[0] for d in decoded], session)
        self.assertEqual(recorder.stats()["cam1"]["written"], 95)
        self.assertEqual(recorder.stats()["cam1"]["format"], "mp4")

    def test_undecodableFrameCounted(self) -> None:
        """
        A JPEG whose header reads but which FFmpeg cannot decode is counted
        as failed; the frames around it are recorded.  A file that would
        hold nothing else is not left behind.
        """
        recorder = self.recorder(format="mp4")
        bad = badPrecisionJpeg()
        recorder.frameReceived(frame("cam1", 0, T0, bad))
        recorder.streamStopped("cam1")
        for seq, (capture, jpeg) in enumerate([(T0 + 1, makeJpeg(number=1)), (T0 + 1.04, bad), (T0 + 1.08, makeJpeg(number=2))]):
            recorder.frameReceived(frame("cam1", seq, capture, jpeg))
        self.stop(recorder)
        stats = recorder.stats()["cam1"]
        self.assertEqual((stats["written"], stats["failed"], stats["segments"]), (2, 2, 1))
        [path] = self.files()
        self.assertEqual([round(d[0], 3) for d in pictures(path)], [0, 0.08])

    def test_oddSize(self) -> None:
        """
        A 65x49 stream is recorded at 64x48, as H.264 in 4:2:0 needs even
        sides.
        """
        recorder = self.recorder(format="mp4")
        for seq in range(3):
            recorder.frameReceived(frame("cam1", seq, T0 + seq / FPS, makeJpeg(65, 49, number=seq)))
        self.stop(recorder)
        self.assertEqual({d[1:3] for d in pictures(self.files()[0])}, {(64, 48)})

    def test_keyframeEverySecond(self) -> None:
        """
        A keyframe starts every second of video (so each MP4 fragment, what
        a killed receiver can lose, is about a second long), not every
        frame although every JPEG is an intra picture.
        """
        recorder = self.recorder(format="mp4")
        for seq in range(60):
            recorder.frameReceived(frame("cam1", seq, T0 + seq / FPS, makeJpeg(number=seq)))
        self.stop(recorder)
        with av.open(self.files()[0]) as container:
            keys = [
                round(float(f.pts * f.time_base), 3)
                for f in container.decode(video=0)
                if f.key_frame
            ]
        # x264 may add one where it sees a scene cut (this noise is one
        # long cut); the forced ones are there regardless.
        self.assertLessEqual({0, 1.0, 2.0}, set(keys))
        self.assertLess(len(keys), 10)


class TimelineTests(SynchronousTestCase):
    def place(self, *times) -> tuple[list[int], Timeline]:
        timeline = Timeline()
        return [timeline.place(c, r) for c, r in times], timeline

    def test_captureTimes(self) -> None:
        """
        Timestamps are milliseconds of capture time since the first frame,
        whatever the receive times.
        """
        pts, timeline = self.place((T0, 5.0), (T0 + 0.0401, 5.2), (T0 + 3.0804, 5.21))
        self.assertEqual((pts, timeline.fallbacks), ([0, 40, 3080], 0))

    def test_noDrift(self) -> None:
        """
        Rounding each frame to a millisecond does not add up: the
        thousandth frame at 30 fps is still at its capture time.
        """
        pts, _ = self.place(*[(T0 + i / 30, T0 + i / 30) for i in range(1001)])
        self.assertEqual(pts[-1], round(1000 / 30 * 1000))

    def test_backwardsAndRepeats(self) -> None:
        """
        A capture time that goes backwards or repeats is placed by the
        receive step; timestamps never repeat or go backwards, even when
        receive times repeat too.
        """
        pts, timeline = self.place(
            (T0, 0.0), (T0 + 0.1, 0.1), (T0 + 0.05, 0.2), (T0 + 0.05, 0.2), (T0 + 0.15, 0.3)
        )
        self.assertEqual(pts, [0, 100, 200, 201, 300])
        self.assertEqual(timeline.fallbacks, 2)

    def test_leapAhead(self) -> None:
        """
        A capture step far longer than the receive step (the sender's clock
        was set) is placed by the receive step.
        """
        pts, timeline = self.place((T0, 0.0), (T0 + 86400, 0.04), (T0 + 86400.04, 0.08))
        self.assertEqual((pts, timeline.fallbacks), ([0, 40, 80], 1))

    def test_notANumber(self) -> None:
        """
        Capture times that are not finite numbers are placed by receive
        time, from the first frame on.
        """
        pts, _ = self.place(
            (math.nan, 0.0), (math.inf, 0.05), (T0, 0.1), (T0 + 0.02, 0.2)
        )
        self.assertEqual(pts, [0, 50, 100, 120])


class JpegSizeTests(SynchronousTestCase):
    def setUp(self) -> None:
        if cv2 is None:
            raise self.skipTest("cv2 is needed to make JPEGs")

    def test_size(self) -> None:
        """
        The size comes from the JPEG's frame header.
        """
        self.assertEqual(jpegSize(makeJpeg(65, 49, number=1)), (65, 49))

    def test_notJpeg(self) -> None:
        """
        Bytes without a frame header, or cut short, are undecodable.
        """
        jpeg = makeJpeg(number=1)
        for data in (b"", b"\xff\xd8\xff not a jpeg \xff\xd9", jpeg[:100], jpeg[:-2], b"GIF89a"):
            self.assertRaises(UndecodableFrame, jpegSize, data)


class OptionsTests(SynchronousTestCase):
    def service(self, *args):
        from imageproto.tap.receiver import Options, makeService
        from twisted.internet.testing import MemoryReactorClock

        options = Options()
        options.parseOptions(["--port", "0", "--record-dir", self.mktemp()] + list(args))
        [recorder] = [c for c in makeService(options, MemoryReactorClock()) if isinstance(c, Recorder)]
        return recorder

    def test_recordFormat(self) -> None:
        """
        C{--record-format} picks the recorder's format; C{mkv} by default.
        """
        self.assertEqual(self.service().format, "mkv")
        self.assertEqual(self.service("--record-format", "mp4").format, "mp4")

    def test_badRecordFormat(self) -> None:
        """
        An unknown C{--record-format} is a usage error naming the formats.
        """
        e = self.assertRaises(UsageError, self.service, "--record-format", "avi")
        self.assertIn("mkv, mp4", str(e))


# --- real twistd processes --------------------------------------------------

TWISTD = twistdCommand()




class TwistdProcess(protocol.ProcessProtocol):
    """
    A C{twistd -n} child process logging to a file, killed at cleanup if
    the test has not ended it.

    @ivar ended: fires with C{(exit code, signal)}.
    """

    def __init__(self, testCase, args: list[str], cwd: str, logfile: str) -> None:
        self.output: list[bytes] = []
        self.ended = Deferred()
        self.exited = False
        self.logfile = logfile
        self.transport = reactor.spawnProcess(
            self,
            sys.executable,
            TWISTD + [f"--logfile={logfile}"] + args,
            env=os.environ.copy(),
            path=cwd,
        )
        testCase.addCleanup(self._cleanup)

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.exited = True
        self.ended.callback((reason.value.exitCode, reason.value.signal))

    def log(self) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def terminate(self) -> Deferred:
        """
        SIGTERM; fails with the process's stacks if it has not ended a
        minute later (L{stopWithin}).
        """
        if self.exited:
            return self.ended

        def output():
            text = b"".join(self.output).decode("utf-8", "replace")
            return f"{text}\n--- {self.logfile}:\n{self.log()[-4000:]}"

        return stopWithin(self.transport, self.ended, output)

    def _cleanup(self):
        if not self.exited:
            self.transport.signalProcess("KILL")
            return self.ended


def readStats(path: str, stream: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)["streams"][stream]
    except (OSError, ValueError, KeyError):
        return None


class RecordingProcessTests(TestCase):
    """
    A real C{twistd imageproto --record-dir} receiving a real sender's
    test pattern (160x120 at 20 fps), ended by a signal.
    """

    timeout = 180

    def setUp(self) -> None:
        if cv2 is None or av is None:
            raise self.skipTest("cv2 and av (PyAV) are needed to read recordings")
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(self.work)
        self.records = os.path.join(self.work, "rec")
        self.statsFile = os.path.join(self.work, "stats.json")

    def start(self, *recordArgs: str) -> tuple[TwistdProcess, TwistdProcess]:
        port = freePort()
        receiver = TwistdProcess(
            self,
            [
                "imageproto",
                "--port", f"tcp:{port}:interface=127.0.0.1",
                "--record-dir", self.records,
                "--stats-file", self.statsFile,
                *recordArgs,
            ],
            self.work,
            os.path.join(self.work, "receiver.log"),
        )
        sender = TwistdProcess(
            self,
            [
                "imageproto-sender",
                "--connect", f"tcp:127.0.0.1:{port}",
                "--name", "cam1",
                "--fps", "20",
                "--width", "160",
                "--height", "120",
            ],
            self.work,
            os.path.join(self.work, "sender.log"),
        )
        return receiver, sender

    def accepted(self, receiver: TwistdProcess, frames: int) -> Deferred:
        """
        Fire once the receiver's statistics file shows C{frames} accepted.
        """

        def check():
            if receiver.exited:
                raise AssertionError(receiver.log())
            stats = readStats(self.statsFile, "cam1")
            return stats is not None and stats["frames"] >= frames

        return waitFor(check, 60, f"the receiver to accept {frames} frames")

    def recordings(self) -> list[str]:
        return sorted(
            (os.path.join(self.records, name) for name in os.listdir(self.records)),
            key=os.path.getmtime,
        )

    @inlineCallbacks
    def test_sigtermMidStream(self) -> None:
        """
        Sent SIGTERM mid-stream, the receiver exits cleanly leaving Matroska
        files PyAV decodes frame by frame, each starting at time 0, holding
        exactly as many frames as the receiver accepted (its final
        statistics file) and as its recorder logged.
        """
        receiver, sender = self.start("--segment-seconds", "1")
        yield self.accepted(receiver, 40)
        exitCode, signal = yield receiver.terminate()
        log = receiver.log()
        self.assertIn((exitCode, signal), [(0, None), (None, 15)], log)
        self.assertIn("Server Shut Down", log)
        yield sender.terminate()

        accepted = readStats(self.statsFile, "cam1")["frames"]
        summary = re.search(
            r"recorder: stream cam1: (\d+) frames queued, (\d+) written, "
            r"(\d+) dropped",
            log,
        )
        self.assertIsNotNone(summary, log)
        queued, written, dropped = map(int, summary.groups())
        paths = self.recordings()
        decoded = [pictures(path) for path in paths]
        counts = [len(d) for d in decoded]
        # Segments of one second: the stream spans several files.
        self.assertGreater(len(paths), 1)
        self.assertTrue(all(path.endswith(".mkv") for path in paths), paths)
        self.assertTrue(all(n > 0 for n in counts), counts)
        self.assertEqual(sum(counts), accepted)
        self.assertEqual((queued, written, dropped), (accepted, accepted, 0))
        for pictured in decoded:
            self.assertEqual(pictured[0][0], 0)
            self.assertEqual({d[1:3] for d in pictured}, {(160, 120)})

    @inlineCallbacks
    def killedMidStream(self, *recordArgs: str):
        """
        Record 3 s, SIGKILL the receiver, and return what its statistics
        file last said it had accepted and the one file it left.
        """
        receiver, sender = self.start(*recordArgs)
        yield self.accepted(receiver, 60)
        receiver.transport.signalProcess("KILL")
        exitCode, signal = yield receiver.ended
        self.assertEqual(signal, 9)
        # The file is written every second: this many were accepted at most
        # a second before the kill.
        accepted = readStats(self.statsFile, "cam1")["frames"]
        yield sender.terminate()
        [path] = self.recordings()
        return accepted, path

    def assertMostFrames(self, times: list[float], accepted: int) -> None:
        """
        All but the last second or so (20 frames, plus 10 in flight) of the
        frames accepted are in the file, 50 ms apart as captured.
        """
        self.assertGreaterEqual(len(times), accepted - 30, (len(times), accepted))
        self.assertGreaterEqual(len(times), 30)
        steps = sorted(b - a for a, b in zip(times, times[1:]))
        self.assertGreater(steps[0], 0)
        self.assertAlmostEqual(steps[len(steps) // 2], 0.05, places=2)

    @inlineCallbacks
    def test_sigkillLeavesPlayableMatroska(self) -> None:
        """
        SIGKILLed mid-stream, the receiver leaves a Matroska file without
        its index that PyAV still reads and decodes, holding the frames
        accepted up to about a second before the kill, at their capture
        times.
        """
        accepted, path = yield self.killedMidStream()
        self.assertTrue(path.endswith(".mkv"), path)
        read = packets(path, truncated=True)
        self.assertMostFrames([t for t, _ in read], accepted)
        with av.open(path) as container:
            decoded = 0
            for _ in container.decode(video=0):
                decoded += 1
        self.assertGreaterEqual(decoded, len(read) - 1)

    @inlineCallbacks
    def test_sigkillLeavesPlayableMp4(self) -> None:
        """
        SIGKILLed mid-stream while recording H.264, the receiver leaves a
        fragmented MP4 that PyAV decodes up to its last whole fragment
        (about a second before the kill).
        """
        accepted, path = yield self.killedMidStream("--record-format", "mp4")
        self.assertTrue(path.endswith(".mp4"), path)
        decoded = pictures(path, truncated=True)
        self.assertEqual({d[1:] for d in decoded}, {(160, 120, "yuv420p", "h264")})
        self.assertMostFrames([d[0] for d in decoded], accepted)
