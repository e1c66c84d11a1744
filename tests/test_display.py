"""
Tests for L{imageproto.features.display}, with a fake OpenCV module: the test
machines have neither a GUI build of OpenCV nor a display.
"""

from twisted.trial.unittest import SynchronousTestCase

from imageproto.features.display import (
    DisplaySink,
    DisplayUnavailable,
    WindowThread,
    checkDisplay,
    guiBackend,
)
from tests.helpers import FakeThreads, makeJpeg, receivedFrame

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

_HEADLESS = "  Media I/O:\n  GUI:                           NONE\n    VTK support: NO\n"
_GTK = "  GUI:                           GTK3\n    GTK+:  YES (ver 3.24)\n"


class FakeCV2:
    """
    The few HighGUI calls L{WindowThread} makes, recorded.
    """

    WINDOW_NORMAL = 0
    __version__ = "4.99.0"

    def __init__(self, buildInformation=_GTK):
        self.buildInformation = buildInformation
        self.calls = []

    def getBuildInformation(self):
        return self.buildInformation

    def namedWindow(self, name, flags):
        self.calls.append(("namedWindow", name))

    def imshow(self, name, image):
        self.calls.append(("imshow", name, image))

    def waitKey(self, millis):
        self.calls.append(("waitKey", millis))
        return -1

    def destroyWindow(self, name):
        self.calls.append(("destroyWindow", name))

    def destroyAllWindows(self):
        self.calls.append(("destroyAllWindows",))


class CheckDisplayTests(SynchronousTestCase):
    def test_guiBackend(self):
        """
        The backend is read from the build information's GUI line.
        """
        self.assertEqual(guiBackend(_HEADLESS), "NONE")
        self.assertEqual(guiBackend(_GTK), "GTK3")
        self.assertEqual(guiBackend("nothing here"), "NONE")

    def test_headless(self):
        """
        A headless OpenCV build is refused with a message naming the
        opencv-python wheel and the need for a display.
        """
        e = self.assertRaises(
            DisplayUnavailable,
            checkDisplay,
            FakeCV2(_HEADLESS),
            {"DISPLAY": ":0"},
            "linux",
        )
        self.assertIn("pip install opencv-python", str(e))
        self.assertIn("display", str(e))

    def test_noDisplay(self):
        """
        A GUI build without DISPLAY or WAYLAND_DISPLAY on Linux is refused.
        """
        e = self.assertRaises(
            DisplayUnavailable, checkDisplay, FakeCV2(), {}, "linux"
        )
        self.assertIn("DISPLAY", str(e))

    def test_available(self):
        """
        A GUI build with a display passes.
        """
        checkDisplay(FakeCV2(), {"DISPLAY": ":0"}, "linux")
        checkDisplay(FakeCV2(), {"WAYLAND_DISPLAY": "wayland-0"}, "linux")
        checkDisplay(FakeCV2(), {}, "darwin")

    def test_realOpenCV(self):
        """
        The installed OpenCV is judged by its own build information.
        """
        if cv2 is None:
            raise self.skipTest("OpenCV is not installed")
        headless = guiBackend(cv2.getBuildInformation()) == "NONE"
        if headless:
            self.assertRaises(DisplayUnavailable, checkDisplay, cv2, {"DISPLAY": ":0"})
        else:
            checkDisplay(cv2, {"DISPLAY": ":0"}, "linux")


class WindowThreadTests(SynchronousTestCase):
    def test_pumpShowsLatest(self):
        """
        Only the newest image per window is drawn; windows are created once
        and events are pumped with waitKey.
        """
        fake = FakeCV2()
        window = WindowThread(fake, waitMillis=7)
        window.show("a", "image1")
        window.show("a", "image2")
        window.show("b", "imageB")
        window.pump()
        self.assertEqual(
            fake.calls,
            [
                ("namedWindow", "a"),
                ("imshow", "a", "image2"),
                ("namedWindow", "b"),
                ("imshow", "b", "imageB"),
                ("waitKey", 7),
            ],
        )
        fake.calls.clear()
        window.show("a", "image3")
        window.pump()
        self.assertEqual(fake.calls, [("imshow", "a", "image3"), ("waitKey", 7)])

    def test_closeWindow(self):
        """
        A closed window is destroyed and its pending image dropped.
        """
        fake = FakeCV2()
        window = WindowThread(fake)
        window.show("a", "image1")
        window.pump()
        window.show("a", "image2")
        window.closeWindow("a")
        fake.calls.clear()
        window.pump()
        self.assertEqual(fake.calls, [("destroyWindow", "a")])

    def test_threadStartStop(self):
        """
        The thread starts, and stopping it destroys every window and joins.
        """
        fake = FakeCV2()
        window = WindowThread(fake)
        window.start()
        window.stop()
        self.assertEqual(fake.calls[-1], ("destroyAllWindows",))


class FakeWindow:
    def __init__(self):
        self.shown = []
        self.closed = []
        self.started = 0
        self.stopped = 0

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1

    def show(self, name, image):
        self.shown.append((name, image))

    def closeWindow(self, name):
        self.closed.append(name)


class DisplaySinkTests(SynchronousTestCase):
    def setUp(self):
        if cv2 is None:
            raise self.skipTest("OpenCV is needed to decode test JPEGs")
        self.window = FakeWindow()
        self.threads = FakeThreads()
        self.sink = DisplaySink(self.window, self.threads)

    def test_decodesInThread(self):
        """
        Frames are decoded by C{runInThread} and shown; the ACK is never
        delayed; the window thread starts with the first frame.
        """
        self.assertIsNone(
            self.sink.frameReceived(
                receivedFrame("a", 0, makeJpeg(16, 12, (0, 128, 255)))
            )
        )
        self.assertEqual((self.window.started, self.window.shown), (1, []))
        self.threads.runAll()
        [(name, image)] = self.window.shown
        self.assertEqual((name, image.shape), ("a", (12, 16, 3)))

    def test_latestWins(self):
        """
        While one frame of a stream is being decoded, later ones replace
        each other; only the newest is decoded next.
        """
        for seq in range(4):
            self.sink.frameReceived(
                receivedFrame("a", seq, makeJpeg(16, 12, (seq, 0, 0)))
            )
        self.assertEqual(len(self.threads.calls), 1)
        self.threads.runAll()
        self.assertEqual(len(self.threads.calls), 1)
        self.assertEqual(self.threads.calls[0][1][1].seq, 3)
        self.threads.runAll()
        self.assertEqual(len(self.window.shown), 2)

    def test_decodeFailureLogged(self):
        """
        A frame that cannot be decoded is logged and the next one still
        shows.
        """
        self.sink.frameReceived(receivedFrame("a", 0, b"\xff\xd8\xffbroken\xff\xd9"))
        self.threads.runAll()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.sink.frameReceived(receivedFrame("a", 1, makeJpeg(16, 12, (0, 128, 255))))
        self.threads.runAll()
        self.assertEqual(len(self.window.shown), 1)

    def test_wholeConsumer(self):
        """
        The sink has every method of a pipeline consumer; a detector's
        answer (C{resultReady}) is ignored.
        """
        from zope.interface.verify import verifyObject

        from imageproto.receiver.pipeline import IFrameConsumer

        verifyObject(IFrameConsumer, self.sink)
        self.assertIsNone(self.sink.resultReady(None, None))

    def test_streamStoppedAndClose(self):
        """
        A stopped stream's window closes; closing the sink stops the window
        thread off the reactor.
        """
        self.sink.frameReceived(receivedFrame("a", 0, makeJpeg(16, 12, (0, 128, 255))))
        self.threads.runAll()
        self.sink.streamStopped("a")
        self.assertEqual(self.window.closed, ["a"])
        d = self.sink.close()
        self.threads.runAll()
        self.successResultOf(d)
        self.assertEqual(self.window.stopped, 1)
