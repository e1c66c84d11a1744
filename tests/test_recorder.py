"""
Tests for L{imageproto.features.recording}.
"""

from __future__ import annotations

import json
import os
import re
import sys

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto.features.recording import Recorder, segmentName
from imageproto.receiver.consumers import ReceivedFrame
from imageproto.tap import freePort, twistdCommand

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None


def makeJpeg(value: int, width: int = 64, height: int = 48) -> bytes:
    image = numpy.full((height, width, 3), value % 256, numpy.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def frame(stream: str, seq: int, receiveTime: float, jpeg: bytes) -> ReceivedFrame:
    return ReceivedFrame(stream, seq, receiveTime - 0.01, receiveTime, receiveTime, jpeg, 0)


def readBack(path: str) -> list:
    """
    Every frame of a video file, read with OpenCV.
    """
    capture = cv2.VideoCapture(path)
    images = []
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return images
            images.append(image)
    finally:
        capture.release()


class ManualThread:
    """
    A C{runInThread} that runs nothing until the test says so.
    """

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, f, *args) -> Deferred:
        d = Deferred()
        self.calls.append((f, args, d))
        return d

    def runAll(self) -> None:
        calls, self.calls = self.calls, []
        for f, args, d in calls:
            d.callback(f(*args))


class FakeWriter:
    def __init__(self, path, fps, size) -> None:
        self.path, self.fps, self.size = path, fps, size
        self.images = []
        self.released = False

    def write(self, image) -> None:
        assert not self.released
        self.images.append(image)

    def release(self) -> None:
        self.released = True


class RecorderTests(SynchronousTestCase):
    def setUp(self) -> None:
        if cv2 is None:
            raise self.skipTest("cv2 is needed to make and read recordings")
        self.directory = self.mktemp()
        self.thread = ManualThread()

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

    def test_recordingPlaysBack(self) -> None:
        """
        Frames queued for a stream are written to an MJPG AVI that OpenCV
        reads back frame by frame: the same count, size and picture.
        """
        recorder = self.recorder()
        values = [0, 40, 80, 120, 160, 200, 240]
        for seq, value in enumerate(values):
            recorder.frameReceived(frame("cam1", seq, 1000 + seq * 0.1, makeJpeg(value)))
        self.stop(recorder)
        [path] = self.files()
        self.assertEqual(os.path.basename(path), segmentName("cam1", 1000))
        images = readBack(path)
        self.assertEqual(len(images), len(values))
        for value, image in zip(values, images):
            self.assertEqual(image.shape, (48, 64, 3))
            self.assertAlmostEqual(float(image.mean()), value, delta=3)
        capture = cv2.VideoCapture(path)
        self.assertAlmostEqual(capture.get(cv2.CAP_PROP_FPS), 10.0, delta=0.5)
        capture.release()
        self.assertEqual(
            recorder.stats()["cam1"],
            {"queued": 7, "dropped": 0, "written": 7, "failed": 0, "segments": 1, "file": None},
        )

    def test_fullQueueDropsAndCounts(self) -> None:
        """
        While the writer is stalled (a slow disk), frames beyond the queue's
        bound are dropped and counted at once instead of waiting; the queued
        ones are all written afterwards.
        """
        recorder = self.recorder(maxQueued=5)
        for seq in range(20):
            self.assertIsNone(
                recorder.frameReceived(frame("cam1", seq, 1000 + seq * 0.1, makeJpeg(seq * 10)))
            )
        self.assertEqual(recorder.stats()["cam1"]["queued"], 5)
        self.assertEqual(recorder.stats()["cam1"]["dropped"], 15)
        self.stop(recorder)
        [path] = self.files()
        self.assertEqual(len(readBack(path)), 5)
        self.assertEqual(recorder.stats()["cam1"]["written"], 5)

    def test_segments(self) -> None:
        """
        A stream is split into files of at most C{segmentSeconds} of receive
        time, each named by the stream and its first frame's time, together
        holding every frame.
        """
        recorder = self.recorder(segmentSeconds=2.0)
        for seq in range(10):
            recorder.frameReceived(frame("cam1", seq, 1000 + seq * 0.5, makeJpeg(seq * 20)))
        self.stop(recorder)
        paths = self.files()
        self.assertEqual(
            [os.path.basename(p) for p in paths],
            [segmentName("cam1", t) for t in (1000, 1002, 1004)],
        )
        self.assertEqual([len(readBack(p)) for p in paths], [4, 4, 2])
        self.assertEqual(recorder.stats()["cam1"]["segments"], 3)

    def test_streamStoppedFinishesFile(self) -> None:
        """
        When a stream stops its file is released (finished) before the
        recorder stops, and its next frame begins a new file.
        """
        writers = []

        def openVideo(path, fps, size):
            writers.append(FakeWriter(path, fps, size))
            return writers[-1]

        recorder = self.recorder(openVideo=openVideo)
        recorder.frameReceived(frame("cam1", 0, 1000.0, makeJpeg(1)))
        recorder.frameReceived(frame("cam1", 1, 1000.1, makeJpeg(2)))
        recorder.streamStopped("cam1")
        recorder.frameReceived(frame("cam1", 2, 1010.0, makeJpeg(3)))
        recorder.stopService()
        f, args, d = self.thread.calls[0]
        f(*args)
        self.assertEqual([len(w.images) for w in writers], [2, 1])
        self.assertTrue(all(w.released for w in writers))
        self.assertAlmostEqual(writers[0].fps, 10.0)

    def test_sizeChangeStartsNewFile(self) -> None:
        """
        A frame of a different size than the open file's starts a new file
        (a video file has one frame size).
        """
        recorder = self.recorder()
        recorder.frameReceived(frame("cam1", 0, 1000.0, makeJpeg(10)))
        recorder.frameReceived(frame("cam1", 1, 1000.1, makeJpeg(10)))
        recorder.frameReceived(frame("cam1", 2, 1000.2, makeJpeg(10, 32, 24)))
        self.stop(recorder)
        first = segmentName("cam1", 1000)
        second = first[: -len(".avi")] + "-2.avi"
        shapes = {
            name: readBack(os.path.join(self.directory, name))[0].shape
            for name in (first, second)
        }
        self.assertEqual(shapes, {first: (48, 64, 3), second: (24, 32, 3)})

    def test_undecodableFrameCounted(self) -> None:
        """
        A frame OpenCV cannot decode is skipped, counted as failed and logged
        naming the stream; the recording goes on.
        """
        recorder = self.recorder()
        recorder.frameReceived(frame("cam1", 0, 1000.0, makeJpeg(10)))
        recorder.frameReceived(frame("cam1", 1, 1000.1, b"\xff\xd8\xff not a jpeg \xff\xd9"))
        recorder.frameReceived(frame("cam1", 2, 1000.2, makeJpeg(10)))
        with capturedLogs() as events:
            self.stop(recorder)
        self.assertEqual(recorder.stats()["cam1"]["failed"], 1)
        self.assertEqual(len(readBack(self.files()[0])), 2)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual([(e["stream"], e["seq"]) for e in warnings], [("cam1", 1)])

    def test_framesAfterStopDropped(self) -> None:
        """
        Frames arriving after the recorder stopped are not queued but
        counted as dropped, and the stop logs each stream's counts.
        """
        recorder = self.recorder()
        recorder.frameReceived(frame("cam1", 0, 1000.0, makeJpeg(10)))
        with capturedLogs() as events:
            self.stop(recorder)
        recorder.frameReceived(frame("cam1", 1, 1000.1, makeJpeg(10)))
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
            recorder.frameReceived(frame("a", seq, 1000 + seq * 0.1, makeJpeg(10)))
            recorder.frameReceived(frame("b", seq, 1000 + seq * 0.1, makeJpeg(10)))
        self.stop(recorder)
        self.assertEqual(
            [os.path.basename(p) for p in self.files()],
            [segmentName("a", 1000), segmentName("b", 1000)],
        )

    def test_segmentName(self) -> None:
        """
        Segment names carry the stream (unsafe characters replaced) and the
        UTC start time.
        """
        self.assertEqual(segmentName("cam1", 0), "cam1-19700101T000000Z.avi")
        self.assertEqual(segmentName("../a b/c", 86400), "_a_b_c-19700102T000000Z.avi")


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
        if not self.exited:
            self.transport.signalProcess("TERM")
        return self.ended

    def _cleanup(self):
        if not self.exited:
            self.transport.signalProcess("KILL")
            return self.ended


def pollUntil(predicate, timeout: float = 60.0, interval: float = 0.1) -> Deferred:
    """
    Fire when C{predicate()} is true, checking on the real reactor every
    C{interval} seconds; fail after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout

    def check():
        if predicate():
            return None
        if reactor.seconds() > deadline:
            raise AssertionError(f"{predicate.__doc__ or predicate} not true after {timeout} s")
        return deferLater(reactor, interval, check)

    return maybeDeferred(check)


def readStats(path: str, stream: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)["streams"][stream]
    except (OSError, ValueError, KeyError):
        return None


class RecordingProcessTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def test_sigtermMidStream(self) -> None:
        """
        A real C{twistd imageproto --record-dir} receiving a real sender's
        test pattern, sent SIGTERM mid-stream, exits cleanly leaving
        recordings OpenCV reads back frame by frame, holding exactly as many
        frames as the receiver accepted (its final statistics file) and as
        its recorder logged.
        """
        if cv2 is None:
            raise self.skipTest("cv2 is needed to read recordings")
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        records = os.path.join(work, "rec")
        statsFile = os.path.join(work, "stats.json")
        port = freePort()
        receiver = TwistdProcess(
            self,
            [
                "imageproto",
                "--port", f"tcp:{port}:interface=127.0.0.1",
                "--record-dir", records,
                "--segment-seconds", "1",
                "--stats-file", statsFile,
            ],
            work,
            os.path.join(work, "receiver.log"),
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
            work,
            os.path.join(work, "sender.log"),
        )

        def enoughFrames():
            """the receiver has accepted 40 frames"""
            if receiver.exited:
                raise AssertionError(receiver.log())
            stats = readStats(statsFile, "cam1")
            return stats is not None and stats["frames"] >= 40

        yield pollUntil(enoughFrames)
        exitCode, signal = yield receiver.terminate()
        log = receiver.log()
        self.assertIn((exitCode, signal), [(0, None), (None, 15)], log)
        self.assertIn("Server Shut Down", log)
        yield sender.terminate()

        accepted = readStats(statsFile, "cam1")["frames"]
        summary = re.search(
            r"recorder: stream cam1: (\d+) frames queued, (\d+) written, "
            r"(\d+) dropped",
            log,
        )
        self.assertIsNotNone(summary, log)
        queued, written, dropped = map(int, summary.groups())
        paths = sorted(
            os.path.join(records, name) for name in os.listdir(records)
        )
        counts = [len(readBack(path)) for path in paths]
        # Segments of one second: the stream spans several files.
        self.assertGreater(len(paths), 1)
        self.assertTrue(all(n > 0 for n in counts), counts)
        self.assertEqual(sum(counts), accepted)
        self.assertEqual((queued, written, dropped), (accepted, accepted, 0))
        for path in paths:
            self.assertEqual(readBack(path)[0].shape, (120, 160, 3))
