"""
Tests for L{imageproto.sender.sources}: real OpenCV on video files and JPEGs the
tests write at run time.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None

from imageproto import wire

if cv2 is not None:
    from imageproto.sender import sources

NO_CV2 = "OpenCV (cv2) is not installed"


def writeVideo(path, frames=6, fps=12.0, size=(64, 48)):
    """
    Write an MJPG .avi whose frame I is filled with grey level 20*I.
    """
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(numpy.full((size[1], size[0], 3), 20 * i, numpy.uint8))
    writer.release()
    return path


def level(image):
    """
    The grey level of an image in steps of 20 (JPEG rounding is +-2).
    """
    return int(round(float(image.mean()) / 20))


class EncoderTests(SynchronousTestCase):
    skip = NO_CV2 if cv2 is None else None

    def setUp(self):
        self.image = numpy.zeros((60, 80, 3), numpy.uint8)
        self.image[:, :40] = (0, 0, 255)

    def decode(self, jpeg):
        return cv2.imdecode(numpy.frombuffer(jpeg, numpy.uint8), cv2.IMREAD_COLOR)

    def test_encodesJpeg(self):
        """
        encode returns JPEG bytes that decode to an image of the same size.
        """
        jpeg = sources.Encoder().encode(self.image)
        self.assertTrue(wire.isJpeg(jpeg))
        self.assertEqual(self.decode(jpeg).shape, (60, 80, 3))

    def test_resizeKeepsAspect(self):
        """
        Given only a width (or only a height), the other side follows the
        aspect ratio.
        """
        self.assertEqual(self.decode(sources.Encoder(width=40).encode(self.image)).shape, (30, 40, 3))
        self.assertEqual(self.decode(sources.Encoder(height=120).encode(self.image)).shape, (120, 160, 3))

    def test_resizeBoth(self):
        """
        Given both, the frame is resized to exactly that size.
        """
        jpeg = sources.Encoder(width=32, height=32).encode(self.image)
        self.assertEqual(self.decode(jpeg).shape, (32, 32, 3))

    def test_qualityMatters(self):
        """
        A lower quality gives a smaller JPEG of a detailed image.
        """
        noise = numpy.random.default_rng(1).integers(0, 255, (120, 160, 3), numpy.uint8)
        low = sources.Encoder(quality=10).encode(noise)
        high = sources.Encoder(quality=95).encode(noise)
        self.assertLess(len(low), len(high))

    def test_badQuality(self):
        """
        A quality outside 1..100 is refused.
        """
        self.assertRaises(ValueError, sources.Encoder, quality=0)
        self.assertRaises(ValueError, sources.Encoder, quality=101)


class VideoFileSourceTests(SynchronousTestCase):
    skip = NO_CV2 if cv2 is None else None

    def setUp(self):
        directory = self.mktemp()
        os.mkdir(directory)
        self.path = writeVideo(os.path.join(directory, "clip.avi"))

    def readAll(self, source, limit=50):
        images = []
        while len(images) < limit:
            image = source.read()
            if image is None:
                break
            images.append(image)
        return images

    def test_readsEveryFrameThenEnds(self):
        """
        A video source reads each frame in order, then returns None; it is
        finite and reports the file's frame rate.
        """
        source = sources.VideoFileSource(self.path)
        source.open()
        self.addCleanup(source.close)
        self.assertFalse(source.live)
        self.assertEqual(source.nativeFps(), 12.0)
        images = self.readAll(source)
        self.assertEqual([level(i) for i in images], [0, 1, 2, 3, 4, 5])
        self.assertIsNone(source.read())

    def test_loop(self):
        """
        With C{loop}, the first frame follows the last.
        """
        source = sources.VideoFileSource(self.path, loop=True)
        source.open()
        self.addCleanup(source.close)
        images = self.readAll(source, limit=8)
        self.assertEqual([level(i) for i in images], [0, 1, 2, 3, 4, 5, 0, 1])

    def test_missingFile(self):
        """
        Opening a file OpenCV cannot read raises CaptureError naming it.
        """
        source = sources.VideoFileSource("/nonexistent/clip.avi")
        e = self.assertRaises(sources.CaptureError, source.open)
        self.assertIn("/nonexistent/clip.avi", str(e))

    def test_grab(self):
        """
        grab reads and encodes one frame with the capture time from C{now},
        and returns None at the end of the source.
        """
        source = sources.VideoFileSource(self.path)
        source.open()
        self.addCleanup(source.close)
        encoder = sources.Encoder()
        captured = sources.grab(source, encoder, now=lambda: 123.5)
        self.assertEqual(captured.captureTime, 123.5)
        self.assertTrue(wire.isJpeg(captured.jpeg))
        for _ in range(5):
            self.assertIsNotNone(sources.grab(source, encoder))
        self.assertIsNone(sources.grab(source, encoder))


class CameraSourceTests(SynchronousTestCase):
    skip = NO_CV2 if cv2 is None else None

    def test_missingDevice(self):
        """
        A camera that cannot be opened raises CaptureError naming it.
        """
        source = sources.CameraSource("/nonexistent/stream.avi")
        e = self.assertRaises(sources.CaptureError, source.open)
        self.assertIn("/nonexistent/stream.avi", str(e))

    def test_reopensAfterFailure(self):
        """
        A failed read raises CaptureError, and the next read opens the
        stream again (a URL source here: a video file OpenCV opens).
        """
        directory = self.mktemp()
        os.mkdir(directory)
        path = writeVideo(os.path.join(directory, "cam.avi"), frames=2)
        source = sources.CameraSource(path)
        self.assertTrue(source.live)
        source.open()
        self.addCleanup(source.close)
        self.assertEqual([level(source.read()) for _ in range(2)], [0, 1])
        self.assertRaises(sources.CaptureError, source.read)
        self.assertEqual(level(source.read()), 0)


class ImageFolderSourceTests(SynchronousTestCase):
    skip = NO_CV2 if cv2 is None else None

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        for name, level in [("b.jpg", 100), ("a.jpg", 40), ("c.png", 200)]:
            image = numpy.full((16, 16, 3), level, numpy.uint8)
            cv2.imwrite(os.path.join(self.directory, name), image)
        with open(os.path.join(self.directory, "broken.jpg"), "wb") as f:
            f.write(b"not a jpeg at all")
        with open(os.path.join(self.directory, "notes.txt"), "w") as f:
            f.write("ignored")

    def test_sortedOnceSkippingUnreadable(self):
        """
        Each image is read once in name order; an unreadable file raises
        CaptureError naming it and the next read moves on; other files are
        ignored; then the source is exhausted.
        """
        source = sources.ImageFolderSource(self.directory)
        source.open()
        self.assertFalse(source.live)
        self.assertEqual(level(source.read()), 2)
        self.assertEqual(level(source.read()), 5)
        e = self.assertRaises(sources.CaptureError, source.read)
        self.assertIn("broken.jpg", str(e))
        self.assertEqual(level(source.read()), 10)
        self.assertIsNone(source.read())

    def test_listImages(self):
        """
        listImages names the image files, sorted, and nothing else.
        """
        self.assertEqual(
            sources.listImages(self.directory), ["a.jpg", "b.jpg", "broken.jpg", "c.png"]
        )


class PatternSourceTests(SynchronousTestCase):
    skip = NO_CV2 if cv2 is None else None

    def test_moves(self):
        """
        The pattern is live, has the requested size, and changes from frame
        to frame.
        """
        source = sources.PatternSource(160, 120, now=lambda: 0.0)
        source.open()
        first, second = source.read(), source.read()
        self.assertTrue(source.live)
        self.assertEqual(first.shape, (120, 160, 3))
        self.assertFalse(numpy.array_equal(first, second))
        self.assertEqual(source.frames, 2)
        self.assertEqual(source.nativeFps(), 30.0)

    def test_timeDrawn(self):
        """
        The same frame drawn at two different times differs: the time is
        drawn on it.
        """
        images = []
        for stamp in (0.0, 3600.5):
            source = sources.PatternSource(160, 120, now=lambda stamp=stamp: stamp)
            source.open()
            images.append(source.read())
        self.assertFalse(numpy.array_equal(*images))

    def test_frameNumberDrawn(self):
        """
        No two of the first hundred frames are alike, even where the square
        and the bars come back to where they were: the frame number differs.
        """
        source = sources.PatternSource(64, 48, now=lambda: 0.0)
        source.open()
        images = [source.read() for _ in range(100)]
        self.assertFalse(any(numpy.array_equal(images[0], i) for i in images[1:]))
