# -*- test-case-name: tests.test_capture -*-
"""
Raspberry Pi cameras
====================

On current Raspberry Pi OS a CSI (ribbon cable) camera is read through
libcamera's Python binding C{picamera2}, not through OpenCV:
C{--camera picamera2[:N]} names a L{Picamera2Device} and L{CameraSource}
reads it with C{Picamera2(N)}, a video configuration whose main stream is
C{RGB888} (which picamera2 lays out as B, G, R bytes: the order OpenCV
expects, so frames need no conversion), and C{capture_array("main")}.  Like
every read here, opening and capturing run in the capture thread.  This path
is tested against a stand-in module that follows picamera2's documented API,
not on a Pi.
"""

from __future__ import annotations



from attrs import field, frozen
from attrs.validators import ge, instance_of, optional

from imageproto.sender.sources import CaptureError

__all__ = ["PICAMERA2_MISSING", "Picamera2Device", "parsePicamera2", "checkPicamera2"]


PICAMERA2_MISSING = (
    "picamera2 is not installed: on Raspberry Pi OS run "
    "sudo apt install python3-picamera2 (a virtualenv sees it only when made "
    "with --system-site-packages); elsewhere use --camera INDEX or a URL"
)


def _evenUp(n: int) -> int:
    return n + n % 2


@frozen
class Picamera2Device:
    """
    A Raspberry Pi camera read through C{picamera2}: C{--camera
    picamera2[:N]}.

    @ivar index: the camera number C{Picamera2(N)} opens.
    @ivar width: the frame width to ask the camera for, or 0 for picamera2's
        default video size (the L{Encoder} still resizes to C{--width}).
    @ivar height: likewise.
    @ivar fps: the frame rate to ask the camera for, or C{None} for
        picamera2's default.
    """

    index: int = field(default=0, validator=[instance_of(int), ge(0)])
    width: int = field(default=0, validator=ge(0))
    height: int = field(default=0, validator=ge(0))
    fps: float | None = field(default=None, validator=optional(ge(0)))

    def __str__(self) -> str:
        return f"picamera2:{self.index}"

    def configuration(self) -> dict:
        """
        The keyword arguments for C{create_video_configuration}.

        picamera2 wants even sizes, so an odd C{--width} or C{--height} asks
        for one pixel more and the encoder takes it back off; with only one
        of them set, the camera keeps its default size and the encoder
        scales.  C{FrameDurationLimits} (microseconds, minimum and maximum)
        is the libcamera control that fixes the frame rate.
        """
        main: dict = {"format": "RGB888"}
        if self.width and self.height:
            main["size"] = (_evenUp(self.width), _evenUp(self.height))
        controls = {}
        if self.fps:
            micros = int(round(1_000_000 / self.fps))
            controls["FrameDurationLimits"] = (micros, micros)
        return {"main": main, "controls": controls}


def parsePicamera2(value: str) -> int | None:
    """
    The camera number of a C{--camera} value naming picamera2, or C{None}
    when it names something else.

    @raise ValueError: for C{picamera2:} followed by anything but a number.
    """
    name, colon, index = value.partition(":")
    if name != "picamera2":
        return None
    if not colon:
        return 0
    if not index.isdigit():
        raise ValueError(
            f"--camera {value}: use picamera2 or picamera2:N with N a camera number"
        )
    return int(index)


def checkPicamera2() -> None:
    """
    Import C{picamera2}, so that a sender asked for a Pi camera stops at
    option-check time on a machine without it.

    @raise CaptureError: with L{PICAMERA2_MISSING}, if it cannot be imported.
    """
    try:
        import picamera2  # noqa: F401
    except ImportError as e:
        raise CaptureError(f"{PICAMERA2_MISSING} ({e})") from None


class _Picamera2Camera:
    """
    One C{Picamera2} object: configured, started, read, stopped, closed.
    Used by L{CameraSource} from the capture thread only.
    """

    def __init__(self, device: Picamera2Device) -> None:
        self.device = device
        self._camera = None

    @property
    def opened(self) -> bool:
        return self._camera is not None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CaptureError(PICAMERA2_MISSING) from None
        try:
            camera = Picamera2(self.device.index)
        except (RuntimeError, IndexError) as e:
            raise CaptureError(
                f"picamera2 cannot open camera {self.device.index}: {e}"
            ) from None
        try:
            camera.configure(
                camera.create_video_configuration(**self.device.configuration())
            )
            camera.start()
        except (RuntimeError, ValueError) as e:
            camera.close()
            raise CaptureError(
                f"picamera2 cannot start camera {self.device.index}: {e}"
            ) from None
        self._camera = camera

    def nativeFps(self) -> float | None:
        # Without --fps, picamera2's video configuration asks libcamera for
        # 30 fps; capture_array waits for each frame, so the camera paces
        # the loop whatever this says.
        return self.device.fps or 30.0

    def read(self) -> "numpy.ndarray | None":  # noqa: F821
        try:
            image = self._camera.capture_array("main")
        except (RuntimeError, TimeoutError):
            return None
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            return None
        return image

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
            finally:
                camera.close()
