# -*- test-case-name: tests.test_capture -*-
"""
Frame sources and JPEG encoding for the sender: the only module on the sender
side that imports OpenCV (on first use, so that importing it is cheap).

Everything here blocks (device and file I/O, decoding, encoding), so it runs
in the capture service's worker thread, never in the reactor thread.  The
functions take and return plain values: a source's C{read()} returns a numpy
image, L{grab} returns a L{Captured} holding JPEG bytes.

A source is an object with:

  - C{live}: C{True} for sources that cannot wait (a camera, the test
    pattern): frames the network cannot take are dropped.  C{False} for
    finite sources (a video file, an image folder), which are delivered
    whole.
  - C{description}: a short text for log lines.
  - C{open()}: acquire the device or file; raises L{CaptureError}.
  - C{nativeFps()}: the source's own frame rate, or C{None} (call after
    C{open}).
  - C{read()}: the next image, or C{None} once a finite source is exhausted;
    raises L{CaptureError} for a frame that could not be read (the caller
    logs it and carries on with the next one).
  - C{close()}: release the device or file; safe to call more than once.

Image folders are decoded and re-encoded like every other source, so
C{--width}, C{--height} and C{--quality} apply to them too; the bytes sent are
therefore not the file's own bytes.

The Raspberry Pi CSI camera source is in L{imageproto.sender.picamera}.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from typing import Callable

from attrs import field, frozen

from imageproto.common.jpeg import encodeJpeg


class _Lazy:
    """
    A module imported on first use: a sender of ready JPEG bytes (the
    embedding API, L{imageproto.sender.embed}) reaches this module through
    the capture service without paying for OpenCV and numpy (about 0.1 s and
    tens of MB).
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str):
        module = importlib.import_module(self._name)
        globals()[self._name] = module
        return getattr(module, attribute)


cv2 = _Lazy("cv2")
numpy = _Lazy("numpy")

__all__ = [
    "CaptureError",
    "Captured",
    "Encoder",
    "VideoFileSource",
    "CameraSource",
    "Picamera2Device",
    "PICAMERA2_MISSING",
    "parsePicamera2",
    "checkPicamera2",
    "ImageFolderSource",
    "PatternSource",
    "IMAGE_EXTENSIONS",
    "listImages",
    "grab",
]

IMAGE_EXTENSIONS = frozenset(
    [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]
)


class CaptureError(Exception):
    """
    A source could not be opened, or one frame of it could not be read.
    """


@frozen
class Captured:
    """
    One captured and encoded frame.

    @ivar jpeg: the JPEG bytes.
    @ivar captureTime: when the image was read, in seconds since the epoch.
    """

    jpeg: bytes = field(repr=False)
    captureTime: float


class Encoder:
    """
    Resize (optionally) and JPEG-encode images.

    @param width: the output width in pixels, or 0 to keep it (or to follow
        C{height} keeping the aspect ratio).
    @param height: the output height, likewise.
    @param quality: the JPEG quality, 1 to 100.
    """

    def __init__(self, width: int = 0, height: int = 0, quality: int = 90) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1..100, not {quality}")
        self.width = width
        self.height = height
        self.quality = int(quality)

    def _size(self, image: numpy.ndarray) -> tuple[int, int] | None:
        h, w = image.shape[:2]
        width, height = self.width, self.height
        if not width and not height:
            return None
        if not height:
            height = max(1, round(h * width / w))
        elif not width:
            width = max(1, round(w * height / h))
        if (width, height) == (w, h):
            return None
        return width, height

    def encode(self, image: numpy.ndarray) -> bytes:
        """
        @return: the JPEG encoding of C{image} at the configured size.
        @raise CaptureError: if OpenCV cannot encode it.
        """
        size = self._size(image)
        if size is not None:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        try:
            return encodeJpeg(image, self.quality)
        except ValueError as e:
            raise CaptureError("OpenCV could not JPEG-encode the image") from e


def grab(source, encoder: Encoder, now: Callable[[], float] = time.time):
    """
    Read one image from C{source} and encode it.  Runs in a worker thread.

    @return: a L{Captured}, or C{None} when the source is exhausted.
    @raise CaptureError: when this one frame could not be read.
    """
    image = source.read()
    if image is None:
        return None
    captureTime = now()
    return Captured(encoder.encode(image), captureTime)


def _fps(value: float) -> float | None:
    if not value or math.isnan(value) or value <= 0 or value > 1000:
        return None
    return float(value)


class _VideoCaptureSource:
    """
    What file and camera sources share: one C{cv2.VideoCapture}.

    @ivar kind: "video" or "camera", for error messages.
    """

    kind = "source"

    def __init__(self, target: int | str) -> None:
        self._target = target
        self.description = f"{self.kind} {target}"
        self._capture = None

    def open(self) -> None:
        capture = cv2.VideoCapture(self._target)
        if not capture.isOpened():
            capture.release()
            raise CaptureError(f"OpenCV cannot open the {self.kind} {self._target}")
        self._capture = capture

    def nativeFps(self) -> float | None:
        return _fps(self._capture.get(cv2.CAP_PROP_FPS))

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class VideoFileSource(_VideoCaptureSource):
    """
    A video file, read frame by frame; finite unless C{loop}.

    @param path: the file.
    @param loop: start again from the first frame at the end.
    """

    live = False
    kind = "video"

    def __init__(self, path: str, loop: bool = False) -> None:
        super().__init__(path)
        self.path = path
        self.loop = loop

    def read(self) -> numpy.ndarray | None:
        ok, image = self._capture.read()
        if not ok and self.loop:
            # Rewinding with CAP_PROP_POS_FRAMES is unreliable for some
            # containers; reopening always works.
            self.close()
            self.open()
            ok, image = self._capture.read()
        return image if ok else None


class _OpenCVCamera(_VideoCaptureSource):
    kind = "camera"

    @property
    def opened(self) -> bool:
        return self._capture is not None

    def read(self) -> numpy.ndarray | None:
        ok, image = self._capture.read()
        return image if ok else None


class CameraSource:
    """
    A live camera: a device index or any URL OpenCV opens (RTSP, HTTP
    MJPEG), or a L{Picamera2Device} read through picamera2.

    A failed read releases the device; the next read opens it again, so a
    camera that was unplugged or a stream that dropped comes back by itself.

    @param device: an C{int} device index, a URL or a L{Picamera2Device}.
    """

    live = True

    def __init__(self, device: int | str | Picamera2Device) -> None:
        self.device = device
        self.description = f"camera {device}"
        if isinstance(device, Picamera2Device):
            self._camera = _Picamera2Camera(device)
        else:
            self._camera = _OpenCVCamera(device)

    def open(self) -> None:
        self._camera.open()

    def nativeFps(self) -> float | None:
        return self._camera.nativeFps()

    def read(self) -> numpy.ndarray:
        if not self._camera.opened:
            self.open()
        image = self._camera.read()
        if image is None:
            self.close()
            raise CaptureError(f"camera {self.device} returned no frame")
        return image

    def close(self) -> None:
        self._camera.close()


def listImages(directory: str) -> list[str]:
    """
    @return: the names in C{directory} with an image extension, sorted.
    """
    return sorted(
        name
        for name in os.listdir(directory)
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        and os.path.isfile(os.path.join(directory, name))
    )


class ImageFolderSource:
    """
    Each image in a folder once, sorted by name.  A file OpenCV cannot decode
    raises L{CaptureError} naming it, and the next read moves on to the
    next file.

    @param directory: the folder.
    """

    live = False

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.description = f"images in {directory}"
        self._names: list[str] = []
        self._next = 0
        self.current: str | None = None

    def open(self) -> None:
        try:
            self._names = listImages(self.directory)
        except OSError as e:
            raise CaptureError(f"cannot list {self.directory}: {e}") from None
        self._next = 0

    def nativeFps(self) -> None:
        return None

    def read(self) -> numpy.ndarray | None:
        if self._next >= len(self._names):
            return None
        name = self._names[self._next]
        self._next += 1
        # Read on the reactor thread once this read's frame is offered
        # (captures never overlap): how --results names each image.
        self.current = name
        image = cv2.imread(os.path.join(self.directory, name), cv2.IMREAD_COLOR)
        if image is None:
            raise CaptureError(f"cannot read image {name}; skipped")
        return image

    def close(self) -> None:
        pass


class PatternSource:
    """
    A built-in moving test pattern, live: colour bars that scroll, a bouncing
    square, and the frame number and wall-clock time drawn on each frame.

    @param width: frame width in pixels.
    @param height: frame height in pixels.
    @param now: the clock drawn on the frames.
    """

    live = True
    description = "test pattern"
    fps = 30.0

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.width = width
        self.height = height
        self.now = now
        self.frames = 0
        columns = numpy.arange(width, dtype=numpy.float32)
        self._hues = (columns * 180.0 / width).astype(numpy.uint8)

    def open(self) -> None:
        self.frames = 0

    def nativeFps(self) -> float:
        return self.fps

    def read(self) -> numpy.ndarray:
        n = self.frames
        self.frames += 1
        w, h = self.width, self.height
        hue = numpy.roll(self._hues, n * 4)
        hsv = numpy.empty((h, w, 3), numpy.uint8)
        hsv[..., 0] = hue[numpy.newaxis, :]
        hsv[..., 1] = 200
        hsv[..., 2] = 160
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        side = max(8, min(w, h) // 6)
        x = _bounce(n * 7, w - side)
        y = _bounce(n * 5, h - side)
        cv2.rectangle(image, (x, y), (x + side, y + side), (255, 255, 255), -1)
        stamp = self.now()
        text = [
            f"frame {n}",
            time.strftime("%H:%M:%S", time.localtime(stamp))
            + f".{int(stamp * 1000) % 1000:03d}",
        ]
        scale = max(0.4, h / 480.0)
        for i, line in enumerate(text):
            origin = (10, int((i + 1) * 32 * scale))
            # A thick black outline under thin white text reads on any hue.
            for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 1)):
                cv2.putText(
                    image,
                    line,
                    origin,
                    cv2.FONT_HERSHEY_SIMPLEX,
                    scale,
                    colour,
                    thickness,
                )
        return image

    def close(self) -> None:
        pass


def _bounce(position: int, span: int) -> int:
    """
    Fold C{position} back and forth over C{0..span}.
    """
    if span <= 0:
        return 0
    position %= 2 * span
    return position if position <= span else 2 * span - position


# The picamera2 source lives in its own module; named here too, where the
# other sources are.
from imageproto.sender.picamera import (  # noqa: E402
    PICAMERA2_MISSING,
    Picamera2Device,
    _Picamera2Camera,
    checkPicamera2,
    parsePicamera2,
)
