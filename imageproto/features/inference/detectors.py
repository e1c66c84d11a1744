# -*- test-case-name: tests.test_detectors -*-
"""
Frame processors for the receiver's C{--detect} option.

A processor finds things in one decoded frame and reports them as
detections: plain dicts C{{"label": str, "confidence": float, "box": [x, y,
w, h]}} with the box in integer pixels of the frame as the sender sent it.

Writing your own
================

Name a class (or any callable taking no arguments) on the command line as
C{--detect mypackage.module:MyDetector}.  The receiver calls it once per
worker thread, because OpenCV objects such as C{CascadeClassifier} and
C{HOGDescriptor} must not be shared between threads, and calls the result's
C{detect} method from that thread only::

    class MyDetector:
        def detect(self, image, stream):
            # image: a BGR numpy array (height, width, 3), decoded from the
            #        frame's JPEG; do not keep it after returning.
            # stream: the sender's stream name, for per-stream state.
            return [detection("thing", 0.9, (x, y, w, h))]

The class may set C{serial = True} when it keeps per-stream state that
depends on frame order (as C{motion} does): each stream's frames then run one
at a time, in order.  Raise L{DetectorError} from the constructor for a
configuration problem; the receiver refuses to start and prints it.

Built-in processors: C{people}, C{faces}, C{cats}, C{motion}, C{echo} and
C{onnx:PATH}.  See L{loadDetector}.

Confidence
==========

Every detector's confidence is a number from 0 to 1, higher meaning surer:

  - C{people}: the HOG SVM score M{s} (its signed distance from the
    decision plane) through the logistic function M{1 / (1 + e^-s)}, so 0.5
    is the SVM's own boundary.  The detector only reports windows scoring at
    least L{HogPeopleDetector.hitThreshold} (0.2, confidence 0.55).
  - C{faces}, C{cats}: the Haar cascade's final-stage level weight from
    C{detectMultiScale3}, through the same logistic function.
  - C{motion}: the share of the box's pixels that moved.
  - C{onnx:PATH}: the model's class score (times objectness for YOLOv5).
  - A user's class: whatever it reports; a value outside 0..1 is clipped
    into it, with one warning per worker.

C{--confidence} drops detections below it, for every detector alike,
user classes included: L{loadDetector} wraps whatever the factory builds, so
the filter runs after any detector and in one place.  Its default depends on
the detector (L{defaultConfidence}): 0.25 for C{onnx:PATH} (the usual YOLO
threshold), C{people}, C{faces} and C{cats} (which already stop at their
own thresholds, about 0.5, so it removes nothing more); 0 for C{motion} (a
share of moved pixels, not a likelihood: sparse movement fills little of its
box) and for user classes (their scale is theirs to define).
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from typing import Callable, Sequence

from attrs import define, field, frozen
from twisted.logger import Logger

from imageproto.features.inference.detectors_onnx import (
    OnnxDetector,
    OnnxOptions,
    parseYoloOutput,
    readClassNames,
)

from imageproto.common.jpeg import decodeJpeg, encodeJpeg

__all__ = [
    "DetectorError",
    "DetectorSpec",
    "OnnxOptions",
    "BUILTIN",
    "detection",
    "loadDetector",
    "defaultConfidence",
    "squash",
    "suppress",
    "decodeImage",
    "encodeImage",
    "annotate",
    "HogPeopleDetector",
    "CascadeDetector",
    "MotionDetector",
    "EchoDetector",
    "OnnxDetector",
    "parseYoloOutput",
    "readClassNames",
]

BUILTIN = ("people", "faces", "cats", "motion", "echo")


class DetectorError(Exception):
    """
    A detector cannot be built: a model file that is missing or unreadable,
    an unknown name, a bad option.  The message says what is wrong.
    """


def detection(label: str, confidence: float, box: Sequence[float]) -> dict:
    """
    One detection in the form RESULT carries.

    @param box: C{(x, y, w, h)} in pixels; rounded to integers.
    """
    x, y, w, h = (int(round(float(v))) for v in box)
    return {
        "label": str(label),
        "confidence": round(float(confidence), 4),
        "box": [x, y, w, h],
    }


def squash(score: float) -> float:
    """
    The logistic function M{1 / (1 + e^-score)}: maps a classifier's raw,
    unbounded score onto (0, 1), keeping its order; a score of 0 is 0.5.
    """
    score = float(score)
    # Written so that neither branch overflows for large |score|.
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    z = math.exp(score)
    return z / (1.0 + z)


# The codec calls are written once, in imageproto.common.jpeg; these names
# stay for code that imports them from here (imageproto.client does).
decodeImage = decodeJpeg
encodeImage = encodeJpeg


_COLOURS = [(0, 200, 0), (0, 120, 255), (255, 80, 0), (200, 0, 200), (0, 200, 200)]


def annotate(image, detections: list) -> object:
    """
    Draw each detection's box and "label confidence" on a copy of C{image}.
    """
    import cv2

    out = image.copy()
    labels: dict = {}
    for d in detections:
        x, y, w, h = d["box"]
        colour = _COLOURS[labels.setdefault(d["label"], len(labels)) % len(_COLOURS)]
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2)
        text = f"{d['label']} {d['confidence']:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(y - th - base - 2, 0)
        cv2.rectangle(out, (x, top), (x + tw + 2, top + th + base + 2), colour, -1)
        cv2.putText(
            out,
            text,
            (x + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return out


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


@frozen
class DetectorSpec:
    """
    A checked C{--detect} choice.

    @ivar name: what the user typed.
    @ivar factory: called once per worker thread to build that thread's
        detector.
    @ivar serial: run each stream's frames one at a time, in order.
    @ivar echo: the detector finds nothing and annotated replies are the
        frame as received (not re-encoded).
    """

    name: str
    factory: Callable = field(eq=False)
    serial: bool = False
    echo: bool = False


def defaultConfidence(name: str | None) -> float:
    """
    The C{--confidence} a detector gets when none is given: see the module
    docstring for why each.

    @param name: a C{--detect} value (or C{None}).
    """
    if name in ("motion", "echo"):
        return 0.0
    if name in BUILTIN or (name or "").startswith("onnx:") or name is None:
        return 0.25
    return 0.0


class _ConfidenceFilter:
    """
    Wraps one worker's detector: reports only detections whose confidence
    is at least C{minimum}, after clipping a value outside 0..1 into it.

    @ivar serial: and C{echo}: passed through from the wrapped detector.
    """

    log = Logger()

    def __init__(self, detector, minimum: float, name: str) -> None:
        self.detector = detector
        self.minimum = minimum
        self.serial = bool(getattr(detector, "serial", False))
        self.echo = bool(getattr(detector, "echo", False))
        self._name = name
        self._warned = False

    def detect(self, image, stream: str) -> list:
        found = []
        for d in self.detector.detect(image, stream):
            confidence = float(d["confidence"])
            if not 0.0 <= confidence <= 1.0:
                if not self._warned:
                    self._warned = True
                    self.log.warn(
                        "detector {name} reported confidence {confidence}, "
                        "outside 0..1; clipping it (and any others)",
                        name=self._name,
                        confidence=confidence,
                    )
                # NaN compares false both ways: treat it as no confidence.
                confidence = 0.0 if math.isnan(confidence) else min(max(confidence, 0.0), 1.0)
                d = dict(d, confidence=confidence)
            if confidence >= self.minimum:
                found.append(d)
        return found


def _fromCallable(name: str, build: Callable, minimum: float) -> DetectorSpec:
    """
    Build one instance now so that configuration errors surface before any
    sender is accepted; workers build their own.  Every instance is wrapped
    in the confidence filter.
    """

    def factory():
        return _ConfidenceFilter(build(), minimum, name)

    try:
        probe = build()
    except DetectorError:
        raise
    except Exception as e:
        raise DetectorError(
            f"detector {name!r} failed to start: {type(e).__name__}: {e}"
        ) from None
    if not callable(getattr(probe, "detect", None)):
        raise DetectorError(f"detector {name!r} has no detect(image, stream) method")
    return DetectorSpec(
        name,
        factory,
        serial=bool(getattr(probe, "serial", False)),
        echo=bool(getattr(probe, "echo", False)),
    )


def _importDetector(name: str) -> Callable:
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise DetectorError(
            f"unknown detector {name!r}: use one of {', '.join(BUILTIN)}, "
            "onnx:PATH or package.module:Class"
        )
    try:
        mod = importlib.import_module(module)
    except Exception as e:
        raise DetectorError(
            f"cannot import {module!r} for detector {name!r}: {e}"
        ) from None
    try:
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise DetectorError(f"module {module!r} has no {attr!r}") from None
    if not callable(obj):
        raise DetectorError(f"{name!r} is not a class or callable")
    return obj


def loadDetector(
    name: str, onnx: OnnxOptions | None = None, confidence: float | None = None
) -> DetectorSpec:
    """
    Resolve a C{--detect} value, building one detector to prove it works.

    @param name: C{people}, C{faces}, C{cats}, C{motion}, C{echo},
        C{onnx:PATH} or C{package.module:Class}.
    @param onnx: settings for C{onnx:PATH}.  Its C{confidence} holds
        C{--confidence}, which applies to every detector.
    @param confidence: the minimum confidence; by default C{onnx}'s, or
        without C{onnx} the detector's L{defaultConfidence}.
    @raise DetectorError: naming what is wrong.
    """
    if confidence is None:
        confidence = onnx.confidence if onnx is not None else defaultConfidence(name)
    minimum = float(confidence)
    if not 0.0 <= minimum <= 1.0:
        raise DetectorError(f"--confidence {minimum} is not between 0 and 1")
    if onnx is None:
        onnx = OnnxOptions(confidence=minimum)
    if name == "people":
        build = HogPeopleDetector
    elif name == "faces":
        build = _faces
    elif name == "cats":
        build = _cats
    elif name == "motion":
        build = _motionFactory()
    elif name == "echo":
        build = EchoDetector
    elif name.startswith("onnx:"):
        path = os.path.abspath(name[len("onnx:") :])
        build = lambda: OnnxDetector(path, onnx)  # noqa: E731
    else:
        build = _importDetector(name)
    return _fromCallable(name, build, minimum)
