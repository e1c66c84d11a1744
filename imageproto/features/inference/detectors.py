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
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Callable, Sequence

from attrs import define, field, frozen
from attrs.validators import ge, le

from imageproto.common.jpeg import decodeJpeg, encodeJpeg

__all__ = [
    "DetectorError",
    "DetectorSpec",
    "OnnxOptions",
    "BUILTIN",
    "detection",
    "loadDetector",
    "decodeImage",
    "encodeImage",
    "annotate",
    "HogPeopleDetector",
    "CascadeDetector",
    "MotionDetector",
    "EchoDetector",
    "OnnxDetector",
    "parseYoloOutput",
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
    """

    label = "person"

    def __init__(self, threshold: float = 0.3) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._threshold = threshold

    def detect(self, image, stream: str) -> list:
        import cv2
        import numpy

        boxes, weights = self._hog.detectMultiScale(
            image, winStride=(8, 8), padding=(8, 8), scale=1.05
        )
        if len(boxes) == 0:
            return []
        scores = numpy.asarray(weights, dtype=float).reshape(-1)
        keep = cv2.dnn.NMSBoxes(
            [list(map(int, b)) for b in boxes], scores.tolist(), self._threshold, 0.45
        )
        return [
            detection(self.label, scores[i], boxes[i])
            for i in numpy.asarray(keep).reshape(-1)
        ]


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
        # squash it into (0, 1) so it reads like the other detectors'.
        return [
            detection(self.label, float(w) / (1.0 + abs(float(w))), b)
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
class OnnxOptions:
    """
    Settings for C{onnx:PATH} models.

    @ivar size: the network's input C{(width, height)}; frames are resized
        to it (no letterbox) and boxes scaled back.
    @ivar classes: class names, index = class id; ids without a name are
        reported as C{"class<N>"}.
    @ivar layout: C{"auto"}, C{"yolov5"} (C{[1, N, 5+C]}: cx, cy, w, h,
        objectness, class scores) or C{"yolov8"} (C{[1, 4+C, N]}: cx, cy, w,
        h, class scores).
    """

    size: tuple = (640, 640)
    classes: tuple = ()
    confidence: float = field(default=0.25, validator=[ge(0.0), le(1.0)])
    nms: float = field(default=0.45, validator=[ge(0.0), le(1.0)])
    layout: str = "auto"


def _layoutOf(shape: tuple, layout: str, classCount: int) -> str:
    if layout != "auto":
        return layout
    rows, cols = shape
    if classCount:
        if rows == 4 + classCount and cols != 5 + classCount:
            return "yolov8"
        if cols == 5 + classCount:
            return "yolov5"
    # YOLO exports have many more candidate boxes than attributes.
    return "yolov8" if rows < cols else "yolov5"


def parseYoloOutput(
    output, scale: tuple, options: OnnxOptions
) -> list:
    """
    Turn a YOLO output tensor into detections.

    @param output: the network's output, C{[1, N, 5+C]} or C{[1, 4+C, N]}.
    @param scale: C{(sx, sy)} from network input pixels to frame pixels.
    """
    import cv2
    import numpy

    array = numpy.asarray(output, dtype=numpy.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"unexpected YOLO output shape {numpy.shape(output)}")
    layout = _layoutOf(array.shape, options.layout, len(options.classes))
    if layout == "yolov8":
        rows = array.T
        boxes, scores = rows[:, :4], rows[:, 4:]
    elif layout == "yolov5":
        rows = array
        boxes, scores = rows[:, :4], rows[:, 5:] * rows[:, 4:5]
    else:
        raise ValueError(f"unknown YOLO layout {layout!r}")
    if scores.shape[1] == 0:
        return []
    classIds = scores.argmax(axis=1)
    confidences = scores[numpy.arange(len(scores)), classIds]
    mask = confidences >= options.confidence
    if not mask.any():
        return []
    sx, sy = scale
    cx, cy, w, h = (boxes[mask, i] for i in range(4))
    rects = numpy.stack(
        [(cx - w / 2) * sx, (cy - h / 2) * sy, w * sx, h * sy], axis=1
    )
    kept = cv2.dnn.NMSBoxes(
        rects.tolist(), confidences[mask].tolist(), options.confidence, options.nms
    )
    names = options.classes
    found = []
    for i in numpy.asarray(kept, dtype=int).reshape(-1):
        cid = int(classIds[mask][i])
        label = names[cid] if cid < len(names) else f"class{cid}"
        found.append(detection(label, confidences[mask][i], rects[i]))
    return found


def _readNet(path: str):
    import cv2

    if not os.path.exists(path):
        raise DetectorError(f"ONNX model {path} does not exist")
    if not os.access(path, os.R_OK) or os.path.isdir(path):
        raise DetectorError(f"ONNX model {path} is not a readable file")
    try:
        net = cv2.dnn.readNetFromONNX(path)
    except cv2.error as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "cv2 error"
        raise DetectorError(
            f"ONNX model {path} could not be loaded by OpenCV: {first}"
        ) from None
    if net.empty():
        raise DetectorError(f"ONNX model {path} loaded as an empty network")
    return net


class OnnxDetector:
    """
    A user's YOLO-style ONNX model run through C{cv2.dnn}.

    @param path: the C{.onnx} file.
    """

    def __init__(self, path: str, options: OnnxOptions = OnnxOptions()) -> None:
        self._net = _readNet(path)
        self._options = options

    def detect(self, image, stream: str) -> list:
        import cv2

        width, height = self._options.size
        blob = cv2.dnn.blobFromImage(
            image, 1 / 255.0, (width, height), swapRB=True, crop=False
        )
        self._net.setInput(blob)
        output = self._net.forward()
        frameH, frameW = image.shape[:2]
        return parseYoloOutput(
            output, (frameW / width, frameH / height), self._options
        )


def readClassNames(path: str) -> tuple:
    """
    One class name per line; blank lines are skipped.

    @raise DetectorError: if the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return tuple(line.strip() for line in f if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise DetectorError(f"cannot read class names from {path}: {e}") from None


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


def _fromCallable(name: str, factory: Callable) -> DetectorSpec:
    """
    Build one instance now so that configuration errors surface before any
    sender is accepted; workers build their own.
    """
    try:
        probe = factory()
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


def loadDetector(name: str, onnx: OnnxOptions = OnnxOptions()) -> DetectorSpec:
    """
    Resolve a C{--detect} value, building one detector to prove it works.

    @param name: C{people}, C{faces}, C{cats}, C{motion}, C{echo},
        C{onnx:PATH} or C{package.module:Class}.
    @raise DetectorError: naming what is wrong.
    """
    if name == "people":
        return _fromCallable(name, HogPeopleDetector)
    if name == "faces":
        return _fromCallable(name, _faces)
    if name == "cats":
        return _fromCallable(name, _cats)
    if name == "motion":
        return _fromCallable(name, _motionFactory())
    if name == "echo":
        return _fromCallable(name, EchoDetector)
    if name.startswith("onnx:"):
        path = os.path.abspath(name[len("onnx:") :])
        return _fromCallable(name, lambda: OnnxDetector(path, onnx))
    return _fromCallable(name, _importDetector(name))
