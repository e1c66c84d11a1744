"""
Tests for L{imageproto.sender.sources}: real OpenCV on video files and JPEGs the
tests write at run time, and Raspberry Pi cameras (C{--camera picamera2})
against a stand-in for picamera2, in this process and in a real sender.
"""

import os
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ProcessExitedAlready
from twisted.trial.unittest import SynchronousTestCase, TestCase

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None

from imageproto import wire
from imageproto.tap import freePort, listening, twistdCommand
from imageproto.testing import waitFor
from imageproto.receiver.savedir import savedFrames
from tests.helpers import TwistdProcesses

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


# A stand-in for picamera2, written to a temporary folder by the tests that
# need it: the part of picamera2's documented API the sender uses, with its
# documented behaviour (Picamera2(camera_num) fails with RuntimeError for a
# camera that is not there; create_video_configuration defaults to XBGR8888
# at 1280x720 and 30 fps; configure refuses odd sizes; capture_array(name)
# returns a (height, width, 3) array for RGB888, whose bytes are B, G, R).
# Each frame carries its number: eight black or white stripes along the
# bottom half, bit 0 leftmost, and a blue band along the top.
PICAMERA2_STANDIN = '''
"""A stand-in for picamera2, for tests: no camera, no libcamera."""

import os

import numpy

_CHANNELS = {"RGB888": 3, "BGR888": 3, "XRGB8888": 4, "XBGR8888": 4}


class Picamera2:
    instances = []
    failNextCapture = False

    def __init__(self, camera_num=0, tuning=None):
        cameras = int(os.environ.get("PICAMERA2_STANDIN_CAMERAS", "1"))
        if camera_num >= cameras:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera_num = camera_num
        self.config = None
        self.started = False
        self.closed = False
        self.frames = 0
        Picamera2.instances.append(self)

    def create_video_configuration(self, main={}, lores=None, raw={}, controls={}, **kwargs):
        stream = {"format": "XBGR8888", "size": (1280, 720)}
        stream.update(main)
        return {
            "use_case": "video",
            "main": stream,
            "controls": {"FrameDurationLimits": (33333, 33333), **controls},
        }

    def configure(self, config):
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        width, height = config["main"]["size"]
        if width % 2 or height % 2:
            raise RuntimeError("width and height should be even")
        self.config = config

    def start(self, config=None, show_preview=False):
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_array(self, name="main"):
        if not self.started:
            raise RuntimeError("Camera is not running")
        if Picamera2.failNextCapture:
            Picamera2.failNextCapture = False
            raise RuntimeError("frame timed out")
        stream = self.config[name]
        width, height = stream["size"]
        image = numpy.zeros((height, width, _CHANNELS[stream["format"]]), numpy.uint8)
        n = self.frames
        self.frames += 1
        image[: height // 4, :, 0] = 255
        for bit in range(8):
            if n >> bit & 1:
                image[height // 2 :, bit * width // 8 : (bit + 1) * width // 8, :3] = 255
        return image

    def stop(self):
        self.started = False

    def close(self):
        self.stop()
        self.closed = True
'''


def writePicamera2StandIn(directory):
    """
    Write the picamera2 stand-in as DIRECTORY/picamera2/__init__.py.
    """
    package = os.path.join(directory, "picamera2")
    os.makedirs(package)
    with open(os.path.join(package, "__init__.py"), "w") as f:
        f.write(PICAMERA2_STANDIN)
    return directory


def frameNumber(image):
    """
    The number a stand-in frame carries (after JPEG, so by thresholds).
    """
    height, width = image.shape[:2]
    margin = max(1, width // 32)
    bits = [
        image[
            height // 2 + margin : height - margin,
            bit * width // 8 + margin : (bit + 1) * width // 8 - margin,
        ].mean()
        > 128
        for bit in range(8)
    ]
    return sum(1 << i for i, on in enumerate(bits) if on)


class Picamera2StandInMixin:
    """
    Puts the stand-in on sys.path as C{picamera2} for one test.
    """

    def useStandIn(self):
        import sys

        directory = writePicamera2StandIn(os.path.abspath(self.mktemp()))
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        sys.modules.pop("picamera2", None)
        self.addCleanup(sys.modules.pop, "picamera2", None)
        import picamera2

        return picamera2.Picamera2

    def hideStandIn(self):
        """
        Make C{import picamera2} fail, whatever is installed: a None entry
        in sys.modules raises ImportError.
        """
        import sys

        # Only this one entry: replacing sys.modules itself would lose every
        # module first imported meanwhile, and a later import of one would
        # make a second copy of its classes for the tests that follow.
        saved = sys.modules.get("picamera2")
        had = "picamera2" in sys.modules
        sys.modules["picamera2"] = None

        def restore():
            if had:
                sys.modules["picamera2"] = saved
            else:
                sys.modules.pop("picamera2", None)

        self.addCleanup(restore)


class Picamera2SourceTests(Picamera2StandInMixin, SynchronousTestCase):
    skip = NO_CV2 if cv2 is None else None

    def test_readsConfiguredFrames(self):
        """
        A picamera2 camera opens camera N with a video configuration whose
        main stream is RGB888 at --width x --height, asks for --fps through
        FrameDurationLimits, reads numbered frames from the main stream as
        they are (no colour conversion), and stops and closes the camera.
        """
        Picamera2 = self.useStandIn()
        Picamera2.instances.clear()
        self.patch(os, "environ", dict(os.environ, PICAMERA2_STANDIN_CAMERAS="2"))
        source = sources.CameraSource(sources.Picamera2Device(1, 160, 120, 15.0))
        self.assertTrue(source.live)
        self.assertEqual(source.description, "camera picamera2:1")
        source.open()
        [camera] = Picamera2.instances
        self.assertEqual(camera.camera_num, 1)
        self.assertEqual(camera.config["main"], {"format": "RGB888", "size": (160, 120)})
        self.assertEqual(camera.config["controls"]["FrameDurationLimits"], (66667, 66667))
        self.assertTrue(camera.started)
        self.assertEqual(source.nativeFps(), 15.0)
        images = [source.read() for _ in range(3)]
        self.assertEqual([i.shape for i in images], [(120, 160, 3)] * 3)
        self.assertEqual([frameNumber(i) for i in images], [0, 1, 2])
        self.assertEqual(tuple(images[0][5, 5]), (255, 0, 0))
        source.close()
        self.assertTrue(camera.closed)
        self.assertFalse(camera.started)
        source.close()

    def test_blueStaysBlue(self):
        """
        RGB888 frames are B, G, R bytes, OpenCV's order: the stand-in's blue
        band is blue in the JPEG the sender makes.
        """
        self.useStandIn()
        source = sources.CameraSource(sources.Picamera2Device(0, 64, 48))
        source.open()
        self.addCleanup(source.close)
        captured = sources.grab(source, sources.Encoder())
        image = cv2.imdecode(numpy.frombuffer(captured.jpeg, numpy.uint8), cv2.IMREAD_COLOR)
        b, g, r = (int(v) for v in image[4, 32])
        self.assertGreater(b, 200)
        self.assertLess(max(g, r), 60)

    def test_defaultsAndOddSizes(self):
        """
        Without --width/--height picamera2 keeps its own video size and
        30 fps; an odd size asks the camera for the next even one and the
        encoder makes the size asked for.
        """
        Picamera2 = self.useStandIn()
        Picamera2.instances.clear()
        self.assertEqual(
            sources.Picamera2Device(0).configuration(),
            {"main": {"format": "RGB888"}, "controls": {}},
        )
        source = sources.CameraSource(sources.Picamera2Device(0, 161, 121))
        source.open()
        self.addCleanup(source.close)
        self.assertEqual(Picamera2.instances[0].config["main"]["size"], (162, 122))
        self.assertEqual(source.nativeFps(), 30.0)
        captured = sources.grab(source, sources.Encoder(161, 121))
        image = cv2.imdecode(numpy.frombuffer(captured.jpeg, numpy.uint8), cv2.IMREAD_COLOR)
        self.assertEqual(image.shape, (121, 161, 3))

    def test_missingCamera(self):
        """
        A camera number picamera2 cannot open raises CaptureError naming it.
        """
        self.useStandIn()
        source = sources.CameraSource(sources.Picamera2Device(3))
        e = self.assertRaises(sources.CaptureError, source.open)
        self.assertIn("picamera2 cannot open camera 3", str(e))

    def test_failedCaptureReopens(self):
        """
        A capture that fails releases the camera and raises CaptureError;
        the next read opens the camera again.
        """
        Picamera2 = self.useStandIn()
        Picamera2.instances.clear()
        source = sources.CameraSource(sources.Picamera2Device(0, 64, 48))
        source.open()
        self.addCleanup(source.close)
        source.read()
        self.assertEqual(frameNumber(source.read()), 1)
        Picamera2.failNextCapture = True
        self.assertRaises(sources.CaptureError, source.read)
        self.assertTrue(Picamera2.instances[0].closed)
        self.assertEqual(frameNumber(source.read()), 0)
        self.assertEqual(len(Picamera2.instances), 2)

    def test_notInstalled(self):
        """
        Opening a picamera2 camera without picamera2 says how to install it.
        """
        self.hideStandIn()
        source = sources.CameraSource(sources.Picamera2Device(0))
        e = self.assertRaises(sources.CaptureError, source.open)
        self.assertIn("sudo apt install python3-picamera2", str(e))


class Picamera2OptionTests(Picamera2StandInMixin, SynchronousTestCase):
    """
    C{--camera picamera2[:N]} in C{twistd imageproto-sender}'s options.
    """

    skip = NO_CV2 if cv2 is None else None

    def parse(self, *args):
        from imageproto.tap.sender import Options

        options = Options()
        options.parseOptions(list(args))
        return options

    def test_cameraNumberSizeAndRate(self):
        """
        C{picamera2:N} names camera N with --width, --height and --fps; the
        sender builds a live camera source on it.
        """
        from imageproto.tap.config import CameraSpec, SenderConfig
        from imageproto.tap.sender import buildSource

        self.useStandIn()
        options = self.parse(
            "--camera", "picamera2:2", "--width", "320", "--height", "240", "--fps", "10"
        )
        device = sources.Picamera2Device(2, 320, 240, 10.0)
        self.assertEqual(options["camera"], device)
        config = SenderConfig.fromOptions(options)
        self.assertEqual(config.source, CameraSpec(device))
        source = buildSource(config.source)
        self.assertIsInstance(source, sources.CameraSource)
        self.assertEqual(source.device, device)

    def test_defaultCameraZero(self):
        """
        C{picamera2} alone is camera 0, at picamera2's own size and rate.
        """
        self.useStandIn()
        self.assertEqual(self.parse("--camera", "picamera2")["camera"], sources.Picamera2Device(0))

    def test_badNumber(self):
        """
        C{picamera2:} followed by anything but a number is a usage error.
        """
        from twisted.python.usage import UsageError

        self.useStandIn()
        e = self.assertRaises(UsageError, self.parse, "--camera", "picamera2:front")
        self.assertIn("picamera2:N", str(e))

    def test_notInstalled(self):
        """
        Without picamera2 the option check fails, saying how to install it.
        """
        from twisted.python.usage import UsageError

        self.hideStandIn()
        e = self.assertRaises(UsageError, self.parse, "--camera", "picamera2")
        self.assertIn(
            "picamera2 is not installed: on Raspberry Pi OS run "
            "sudo apt install python3-picamera2",
            str(e),
        )

    def test_otherCamerasUnchanged(self):
        """
        Device indexes and URLs are as before, picamera2 or not.
        """
        self.hideStandIn()
        self.assertEqual(self.parse("--camera", "2")["camera"], 2)
        self.assertEqual(self.parse("--camera", "rtsp://cam/1")["camera"], "rtsp://cam/1")


class Picamera2ProcessTests(TwistdProcesses, TestCase):
    """
    Real C{twistd imageproto} and C{twistd imageproto-sender --camera
    picamera2} processes, the sender finding the stand-in through
    PYTHONPATH.
    """

    skip = NO_CV2 if cv2 is None else None
    timeout = 120
    FRAMES = 24

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.saveDir = os.path.join(self.directory, "saved")
        self.port = freePort()

    def spawn(self, name, args, pythonPath=None):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if pythonPath is not None:
            env["PYTHONPATH"] = pythonPath
        return TwistdProcesses.spawn(self, name, args, env=env)

    @inlineCallbacks
    def test_everyFrameArrives(self):
        """
        A sender reading the stand-in camera at 160x120 and 30 fps streams
        --count frames to a real receiver: all are acknowledged, the sender
        exits 0, and the receiver saved each one, 160x120, its camera frame
        numbers in capture order.
        """
        from tests.helpers import SUMMARY

        receiver = self.spawn(
            "receiver",
            ["imageproto", "--port", f"tcp:{self.port}:interface=127.0.0.1", "--save-dir", self.saveDir],
        )
        yield waitFor(
            lambda: receiver.status is not None or listening(self.port), 30, "the receiver to listen"
        )
        self.assertIsNone(receiver.status, receiver.text)
        standIn = writePicamera2StandIn(os.path.join(self.directory, "standin"))
        sender = self.spawn(
            "sender",
            [
                "imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port}",
                "--camera", "picamera2", "--width", "160", "--height", "120",
                "--fps", "30", "--count", str(self.FRAMES), "--name", "pi",
            ],
            pythonPath=standIn,
        )
        status = yield sender.ended
        self.assertEqual(status, 0, sender.text)
        self.assertIn("capturing from camera picamera2:0", sender.text)
        summary = SUMMARY.search(sender.text)
        self.assertIsNotNone(summary, sender.text)
        self.assertEqual(int(summary["sent"]), self.FRAMES)
        self.assertEqual(int(summary["acknowledged"]), self.FRAMES)
        paths = savedFrames(self.saveDir, "pi")
        self.assertEqual(
            [os.path.basename(p) for p in paths], [f"{seq:08d}.jpg" for seq in range(self.FRAMES)]
        )
        numbers = []
        for path in paths:
            image = cv2.imread(path)
            self.assertEqual(image.shape, (120, 160, 3))
            numbers.append(frameNumber(image))
        self.assertEqual(numbers, sorted(set(numbers)), numbers)

    @inlineCallbacks
    def test_notInstalledExitsWithUsage(self):
        """
        Without picamera2 the sender stops at option-check time, non-zero,
        saying how to install it.
        """
        sender = self.spawn(
            "sender", ["imageproto-sender", "--camera", "picamera2", "--count", "1"]
        )
        status = yield sender.ended
        self.assertNotEqual(status, 0, sender.text)
        self.assertIn("sudo apt install python3-picamera2", sender.text)
