# -*- test-case-name: tests.test_display -*-
"""
C{--display}: an OpenCV window per stream.

OpenCV's HighGUI is not thread-safe and wants one thread to own every
window, so decoding happens in worker threads and a single dedicated
L{WindowThread} makes every C{imshow}/C{waitKey} call.  The headless OpenCV
wheel has no HighGUI at all; L{checkDisplay} says so before anything starts.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from imageproto.receiver.consumers import IFrameSink, ReceivedFrame
from imageproto.receiver.pipeline import ConsumerBase

__all__ = ["DisplayUnavailable", "checkDisplay", "WindowThread", "DisplaySink"]


class DisplayUnavailable(Exception):
    """
    OpenCV cannot open windows here; the message says why and what to do.
    """


_NO_GUI = (
    "--display needs a GUI build of OpenCV and a display: this OpenCV "
    "({version}) was built without HighGUI support (GUI: {gui}), as the "
    "opencv-python-headless wheel is. Install the GUI wheel instead "
    "(pip uninstall opencv-python-headless; pip install opencv-python) and run "
    "where a display is available."
)
_NO_DISPLAY = (
    "--display needs a GUI build of OpenCV (opencv-python) and a display, but "
    "neither DISPLAY nor WAYLAND_DISPLAY is set: run it from a desktop "
    "session (or with X forwarding)."
)


def guiBackend(buildInformation: str) -> str:
    """
    The HighGUI backend named in C{cv2.getBuildInformation()}'s C{GUI:}
    line (C{"NONE"} for a headless build).
    """
    match = re.search(r"^\s*GUI:\s*(\S+)", buildInformation, re.MULTILINE)
    return match.group(1) if match else "NONE"


def checkDisplay(cv2=None, environ=None, platform: str | None = None) -> None:
    """
    Make sure OpenCV can open windows.

    @param cv2: the OpenCV module (imported when omitted; a fake in tests).
    @param environ: the environment (C{os.environ} when omitted).
    @param platform: C{sys.platform} when omitted.
    @raise DisplayUnavailable: with a message naming the fix.
    """
    if cv2 is None:
        import cv2
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    gui = guiBackend(cv2.getBuildInformation())
    if gui.upper() == "NONE":
        raise DisplayUnavailable(_NO_GUI.format(version=cv2.__version__, gui=gui))
    if platform.startswith("linux") and not (
        environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")
    ):
        raise DisplayUnavailable(_NO_DISPLAY)


class WindowThread:
    """
    The one thread that touches OpenCV windows.

    Other threads hand it images with L{show}; it keeps only the newest
    image per window (a slow display skips frames rather than queueing them)
    and draws them between C{waitKey} calls.

    @param cv2: the OpenCV module (a fake in tests).
    """

    log = Logger()

    def __init__(self, cv2, waitMillis: int = 10) -> None:
        self._cv2 = cv2
        self._waitMillis = waitMillis
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._images: dict[str, object] = {}
        self._closing: set[str] = set()
        self._open: set[str] = set()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def show(self, name: str, image) -> None:
        """
        Display C{image} in window C{name} (any thread).
        """
        with self._lock:
            self._images[name] = image
            self._closing.discard(name)
            self._wake.notify()

    def closeWindow(self, name: str) -> None:
        """
        Close window C{name} (any thread).
        """
        with self._lock:
            self._images.pop(name, None)
            self._closing.add(name)
            self._wake.notify()

    def pump(self) -> None:
        """
        Draw what is pending and let HighGUI process events once.  Called
        only from the window thread (or a test).
        """
        with self._lock:
            images, self._images = self._images, {}
            closing, self._closing = self._closing, set()
        cv2 = self._cv2
        for name in closing & self._open:
            cv2.destroyWindow(name)
            self._open.discard(name)
        for name, image in images.items():
            if name not in self._open:
                cv2.namedWindow(name, cv2.WINDOW_NORMAL)
                self._open.add(name)
            cv2.imshow(name, image)
        if self._open:
            cv2.waitKey(self._waitMillis)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._stopped or self._images or self._closing or self._open):
                    self._wake.wait()
                if self._stopped:
                    break
            try:
                self.pump()
            except Exception:
                self.log.failure("OpenCV display failed")
        try:
            self._cv2.destroyAllWindows()
        except Exception:
            self.log.failure("closing OpenCV windows failed")

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="imageproto-display", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """
        Close every window and end the thread (waits for it).
        """
        with self._lock:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


@implementer(IFrameSink)
class DisplaySink(ConsumerBase):
    """
    Shows each stream in its own window.  Decoding runs through
    C{runInThread}, at most one decode per stream at a time: frames that
    arrive meanwhile replace each other, so a slow machine shows fewer
    frames instead of falling behind.  Never delays an ACK.

    The window thread starts with the first frame and stops at L{close}.

    @param window: a L{WindowThread} (or anything with C{start}, C{show},
        C{closeWindow} and C{stop}).
    @param runInThread: C{f(callable, *args) -> Deferred}.
    """

    log = Logger()

    def __init__(self, window, runInThread: Callable[..., Deferred]) -> None:
        self._window = window
        self._runInThread = runInThread
        self._decoding: set[str] = set()
        self._waiting: dict[str, ReceivedFrame] = {}
        self._started = False

    def frameReceived(self, frame: ReceivedFrame) -> None:
        if not self._started:
            self._started = True
            self._window.start()
        if frame.stream in self._decoding:
            self._waiting[frame.stream] = frame
            return None
        self._decode(frame)
        return None

    def _decode(self, frame: ReceivedFrame) -> None:
        name = frame.stream
        self._decoding.add(name)
        d = self._runInThread(_decodeAndShow, self._window, frame)

        def failed(failure):
            self.log.failure(
                "could not display frame {seq} of {stream}",
                failure,
                seq=frame.seq,
                stream=name,
            )

        def decodeNext(_):
            self._decoding.discard(name)
            waiting = self._waiting.pop(name, None)
            if waiting is not None:
                self._decode(waiting)

        d.addErrback(failed)
        d.addCallback(decodeNext)

    def streamStarted(self, name: str) -> None:
        pass

    def streamStopped(self, name: str) -> None:
        self._waiting.pop(name, None)
        self._window.closeWindow(name)

    def close(self) -> Deferred | None:
        self._waiting.clear()
        if not self._started:
            return None
        self._started = False
        # Joining the window thread can take a HighGUI event loop's while.
        return self._runInThread(self._window.stop)


def _decodeAndShow(window, frame: ReceivedFrame) -> None:
    window.show(frame.stream, frame.decode())
