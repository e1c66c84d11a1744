"""
Tests for L{imageproto.recorder}.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from imageproto.recorder import Recorder, segmentName
from imageproto.sinks import ReceivedFrame

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
