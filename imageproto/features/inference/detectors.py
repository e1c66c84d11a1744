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

from typing import Callable

from attrs import field, frozen
from twisted.logger import Logger

from imageproto.features.inference.detectors_onnx import (
    OnnxDetector,
    OnnxOptions,
    parseYoloOutput,
    readClassNames,
)

from imageproto.common.jpeg import decodeJpeg, encodeJpeg
from imageproto.features.inference.builtin import (
    CascadeDetector,
    EchoDetector,
    HogPeopleDetector,
    MotionDetector,
    _cats,
    _faces,
    _motionFactory,
    suppress,
)
from imageproto.features.inference.detections import (
    DetectorError,
    annotate,
    detection,
    squash,
)

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


# The codec calls are written once, in imageproto.common.jpeg; these names
# stay for code that imports them from here (imageproto.client does).
decodeImage = decodeJpeg
encodeImage = encodeJpeg


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
    @ivar backend: the runtime the detector runs on when it says
        (C{onnx:PATH}: C{"onnxruntime/<provider>"} or C{"cv2.dnn"}), else
        C{None}.
    """

    name: str
    factory: Callable = field(eq=False)
    serial: bool = False
    echo: bool = False
    backend: str | None = None


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
        self.backend = getattr(detector, "backend", None)
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
        backend=getattr(probe, "backend", None),
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
