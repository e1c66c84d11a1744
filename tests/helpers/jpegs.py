"""
Real JPEGs for tests: made at run time with OpenCV (imported only when one
is made, so modules that skip without OpenCV still import), or read from
tests/data.
"""

from __future__ import annotations

import os

__all__ = ["DATA", "makeJpeg", "readJpeg"]

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def makeJpeg(width=64, height=48, value=128, quality=95, number=None) -> bytes:
    """
    A real JPEG made with OpenCV: a picture of one colour, or of noise.

    @param value: the colour that fills the picture: a brightness (an
        C{int}) or a BGR tuple.
    @param quality: the JPEG quality (95 is OpenCV's own default).
    @param number: when given, the picture is instead noise seeded by
        C{number} (C{value} is ignored), so each number makes different
        bytes: for tests that tell frames apart by their content.
    """
    import cv2
    import numpy

    if number is None:
        image = numpy.zeros((height, width, 3), numpy.uint8)
        image[:] = value
    else:
        image = numpy.random.RandomState(number).randint(0, 256, (height, width, 3), numpy.uint8)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def readJpeg(name="astronaut.jpg") -> bytes:
    """
    The bytes of the JPEG C{name} in tests/data.
    """
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()
