# -*- test-case-name: tests.test_common -*-
"""
The package's JPEG codec calls, through OpenCV.  They cost milliseconds per
frame: call them in a worker thread, never on the reactor.  OpenCV and numpy
are imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

__all__ = ["decodeJpeg", "encodeJpeg", "DEFAULT_QUALITY"]

DEFAULT_QUALITY = 85


def decodeJpeg(data) -> "numpy.ndarray":  # noqa: F821
    """
    Decode JPEG (or any format OpenCV reads) bytes to a BGR array.

    @param data: bytes or any buffer.
    @raise ValueError: if the bytes are not an image OpenCV can read.
    """
    import cv2
    import numpy

    image = cv2.imdecode(numpy.frombuffer(data, numpy.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{len(data)} bytes are not a readable image")
    return image


def encodeJpeg(image, quality: int = DEFAULT_QUALITY) -> bytes:
    """
    JPEG-encode a BGR (or greyscale) array at C{quality} (1 to 100).

    @raise ValueError: if OpenCV cannot encode it.
    """
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
