# -*- test-case-name: tests.test_detectors -*-
"""
C{--detect onnx:PATH}: a user's YOLO-style ONNX model run through C{cv2.dnn},
and the parsing of its output.  Split from
L{imageproto.features.inference.detectors}, which re-exports these names.
"""

from __future__ import annotations

import os

from attrs import field, frozen
from attrs.validators import ge, le

__all__ = ["OnnxOptions", "OnnxDetector", "parseYoloOutput", "readClassNames"]


def _detection(*args):
    # Imported late: the detectors module imports this one at its top.
    from imageproto.features.inference.detectors import detection

    return detection(*args)


def _error(message: str) -> Exception:
    from imageproto.features.inference.detectors import DetectorError

    return DetectorError(message)


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
        found.append(_detection(label, confidences[mask][i], rects[i]))
    return found


def _readNet(path: str):
    import cv2

    if not os.path.exists(path):
        raise _error(f"ONNX model {path} does not exist")
    if not os.access(path, os.R_OK) or os.path.isdir(path):
        raise _error(f"ONNX model {path} is not a readable file")
    try:
        net = cv2.dnn.readNetFromONNX(path)
    except cv2.error as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "cv2 error"
        raise _error(
            f"ONNX model {path} could not be loaded by OpenCV: {first}"
        ) from None
    if net.empty():
        raise _error(f"ONNX model {path} loaded as an empty network")
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
        raise _error(f"cannot read class names from {path}: {e}") from None
