# -*- test-case-name: tests.test_detectors -*-
"""
The built-in detectors of C{--detect}: C{people} (OpenCV's HOG person
detector, with non-maximum suppression), C{faces} and C{cats} (Haar
cascades), C{motion} (background subtraction per stream) and C{echo}
(nothing found; the frame goes back as it came).  See
L{imageproto.features.inference.detectors} for how they are chosen and what
their confidences mean.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from attrs import define, field

from imageproto.features.inference.detections import DetectorError, detection, squash

__all__ = [
    "HogPeopleDetector",
    "CascadeDetector",
    "MotionDetector",
    "EchoDetector",
    "suppress",
]


class HogPeopleDetector:
    """
    OpenCV's HOG + linear SVM pedestrian detector: upright, full-body people
    of at least 64x128 pixels.

    The defaults were chosen on the test photographs (tests/data) at eight
    sizes from 192 to 800 pixels wide, so that the man in C{photographer.jpg}
    is found and nothing else is: not Chelsea the cat, not the astronaut's
    half-length portrait, not the background.

    @ivar hitThreshold: the least SVM score a window needs; 0 lets weak
        windows group into boxes on fur and furniture.
    @ivar winStride: window step in pixels; (4, 4) finds more boxes of all
        kinds, most of them wrong.
    @ivar scale: the image pyramid's step.
    @ivar padding: pixels of border added around the frame; 0, because
        windows reaching past the edges matched whole frames of a cat.
    @ivar groupThreshold: windows that must overlap to make one box.
    @ivar nms: boxes overlapping more than this (intersection over union)
        after OpenCV's grouping are non-maximum suppressed: the surest
        stays.
    """

    label = "person"
    hitThreshold = 0.2
    winStride = (8, 8)
    scale = 1.03
    padding = (0, 0)
    groupThreshold = 2
    nms = 0.3

    def __init__(self) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, image, stream: str) -> list:
        import numpy

        boxes, weights = self._hog.detectMultiScale(
            image,
            hitThreshold=self.hitThreshold,
            winStride=self.winStride,
            padding=self.padding,
            scale=self.scale,
            groupThreshold=self.groupThreshold,
        )
        if len(boxes) == 0:
            return []
        scores = [squash(w) for w in numpy.asarray(weights, dtype=float).reshape(-1)]
        return [
            detection(self.label, scores[i], boxes[i])
            for i in suppress(boxes, scores, self.nms)
        ]


def suppress(boxes, scores: list, overlap: float) -> list:
    """
    Non-maximum suppression: the indices of the boxes to keep, surest
    first, dropping any box that overlaps a kept one by more than
    C{overlap} (intersection over union) or lies mostly (more than half of
    its area) inside one.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list = []
    for i in order:
        x, y, w, h = (float(v) for v in boxes[i])
        for j in kept:
            X, Y, W, H = (float(v) for v in boxes[j])
            iw = max(0.0, min(x + w, X + W) - max(x, X))
            ih = max(0.0, min(y + h, Y + H) - max(y, Y))
            inter = iw * ih
            union = w * h + W * H - inter
            if union > 0 and (inter / union > overlap or inter > 0.5 * min(w * h, W * H)):
                break
        else:
            kept.append(i)
    return kept


class CascadeDetector:
    """
    A Haar cascade from C{cv2.data.haarcascades}.

    @param cascade: the cascade's file name in that directory.
    @param label: the label each detection carries.
    """

    def __init__(
        self,
        cascade: str,
        label: str,
        scaleFactor: float = 1.1,
        minNeighbors: int = 5,
        minSize: tuple = (30, 30),
    ) -> None:
        import cv2

        path = os.path.join(cv2.data.haarcascades, cascade)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise DetectorError(f"cannot load Haar cascade {path}")
        self.label = label
        self._scaleFactor = scaleFactor
        self._minNeighbors = minNeighbors
        self._minSize = minSize

    def detect(self, image, stream: str) -> list:
        import cv2

        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        boxes, _, weights = self._cascade.detectMultiScale3(
            grey,
            scaleFactor=self._scaleFactor,
            minNeighbors=self._minNeighbors,
            minSize=self._minSize,
            outputRejectLevels=True,
        )
        # Cascades report a stage-sum "level weight", not a probability:
        # squash it into (0, 1) like the HOG score.
        return [
            detection(self.label, squash(w), b)
            for b, w in zip(boxes, weights)
        ]


def _faces() -> CascadeDetector:
    return CascadeDetector("haarcascade_frontalface_default.xml", "face")


def _cats() -> CascadeDetector:
    return CascadeDetector(
        "haarcascade_frontalcatface_extended.xml", "cat", 1.05, 3
    )


class _MotionState:
    """
    Background models shared by every worker's L{MotionDetector}, one per
    stream, each behind its own lock (a subtractor may move between threads
    but must never run in two at once).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict = {}

    def forStream(self, stream: str):
        import cv2

        with self._lock:
            model = self._streams.get(stream)
            if model is None:
                model = self._streams[stream] = _StreamModel(
                    cv2.createBackgroundSubtractorMOG2(
                        history=200, varThreshold=25, detectShadows=False
                    )
                )
            return model


@define(eq=False)
class _StreamModel:
    subtractor: object
    lock: object = field(factory=threading.Lock)
    frames: int = 0


class MotionDetector:
    """
    Moving regions: a per-stream MOG2 background subtractor, its foreground
    mask cleaned up and split into connected regions of at least
    C{minArea} pixels.  The first frame of a stream only seeds the model.

    The confidence is the share of the box's pixels that moved.
    """

    serial = True
    label = "motion"

    def __init__(self, state: _MotionState | None = None, minArea: int = 200) -> None:
        self._state = state if state is not None else _MotionState()
        self._minArea = minArea

    def detect(self, image, stream: str) -> list:
        import cv2
        import numpy

        model = self._state.forStream(stream)
        with model.lock:
            mask = model.subtractor.apply(image)
            model.frames += 1
            if model.frames == 1:
                return []
        mask = cv2.morphologyEx(
            mask, cv2.MORPH_OPEN, numpy.ones((3, 3), numpy.uint8)
        )
        mask = cv2.dilate(mask, numpy.ones((5, 5), numpy.uint8))
        contours, _ = cv2.findContours(
            mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        found = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            if w * h < self._minArea:
                continue
            moved = float(numpy.count_nonzero(mask[y : y + h, x : x + w])) / (w * h)
            found.append(detection(self.label, moved, (x, y, w, h)))
        return found


class EchoDetector:
    """
    Finds nothing; with C{--reply annotated} the frame goes back unchanged.
    For measuring round trips without detector cost.
    """

    echo = True

    def detect(self, image, stream: str) -> list:
        return []


def _motionFactory() -> Callable[[], MotionDetector]:
    state = _MotionState()
    return lambda: MotionDetector(state)
