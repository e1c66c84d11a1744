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


def writeClip(
    path: str,
    frames: int = 48,
    size: tuple = (160, 120),
    fps: float = 16.0,
    noise: bool = False,
) -> None:
    """
    An MJPG video of C{frames} distinct frames, each with its number drawn:
    on a grey that changes with the number, or on random noise (C{noise},
    large JPEGs that fill a small disk quickly).
    """
    import cv2
    import numpy

    width, height = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = numpy.random.default_rng(7)
    for i in range(frames):
        if noise:
            image = rng.integers(0, 255, (height, width, 3), dtype=numpy.uint8)
        else:
            image = numpy.full((height, width, 3), (i * 5) % 256, numpy.uint8)
        cv2.putText(image, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
