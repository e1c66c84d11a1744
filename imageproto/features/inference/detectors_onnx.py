# -*- test-case-name: tests.test_detectors -*-
"""
C{--detect onnx:PATH}: a user's YOLO-style ONNX model, and the parsing of its
output.  Split from L{imageproto.features.inference.detectors}, which
re-exports these names.

Backends
--------

The model runs on onnxruntime when it is installed (C{pip install
onnxruntime}, or C{onnxruntime-gpu} for CUDA), with the CUDA execution
provider when onnxruntime offers it and the CPU provider otherwise; without
onnxruntime it runs through OpenCV's C{cv2.dnn}.  C{--onnx-backend}
(L{OnnxOptions.backend}) picks one explicitly.  Both are fed the same blob
(C{cv2.dnn.blobFromImage}: resized, RGB, scaled to 0..1, NCHW) and their
output goes through the same L{parseYoloOutput}, so they report the same
detections up to floating-point rounding.  The detector names its backend
(L{OnnxDetector.backend}): C{"onnxruntime/CUDAExecutionProvider"},
C{"onnxruntime/CPUExecutionProvider"} or C{"cv2.dnn"}.
"""

from __future__ import annotations

import os

from attrs import field, frozen
from attrs.validators import ge, le

__all__ = [
    "OnnxOptions",
    "OnnxDetector",
    "parseYoloOutput",
    "readClassNames",
    "BACKENDS",
    "onnxruntimeAvailable",
]

# --onnx-backend values.
BACKENDS = ("auto", "onnxruntime", "cv2")


def _detection(*args):
    # Imported late: the detectors module imports this one at its top.
    from imageproto.features.inference.detections import detection

    return detection(*args)


def _error(message: str) -> Exception:
    from imageproto.features.inference.detections import DetectorError

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
    @ivar backend: C{"auto"} (onnxruntime when installed, else cv2.dnn),
        C{"onnxruntime"} or C{"cv2"} (see the module docstring).
    """

    size: tuple = (640, 640)
    classes: tuple = ()
    confidence: float = field(default=0.25, validator=[ge(0.0), le(1.0)])
    nms: float = field(default=0.45, validator=[ge(0.0), le(1.0)])
    layout: str = "auto"
    backend: str = "auto"


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

    _checkPath(path)
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


def onnxruntimeAvailable() -> bool:
    """
    Whether onnxruntime can be imported here.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _checkPath(path: str) -> None:
    if not os.path.exists(path):
        raise _error(f"ONNX model {path} does not exist")
    if not os.access(path, os.R_OK) or os.path.isdir(path):
        raise _error(f"ONNX model {path} is not a readable file")


def _openSession(path: str):
    """
    An onnxruntime session for C{path}: the CUDA provider first when
    onnxruntime offers it (the session falls back to the CPU if CUDA cannot
    start), the CPU provider otherwise.
    """
    import onnxruntime

    _checkPath(path)
    available = onnxruntime.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return onnxruntime.InferenceSession(path, providers=providers)
    except Exception as e:  # onnxruntime raises its own pybind11 types
        text = str(e).strip().splitlines()
        raise _error(
            f"ONNX model {path} could not be loaded by onnxruntime: "
            f"{text[-1] if text else type(e).__name__}"
        ) from None


class OnnxDetector:
    """
    A user's YOLO-style ONNX model, run on onnxruntime or through
    C{cv2.dnn} (see the module docstring).

    @param path: the C{.onnx} file.
    @ivar backend: the runtime the model runs on, for logs and metrics.
    """

    def __init__(self, path: str, options: OnnxOptions = OnnxOptions()) -> None:
        self._options = options
        choice = options.backend
        if choice not in BACKENDS:
            raise _error(f"--onnx-backend must be one of {', '.join(BACKENDS)}, not {choice!r}")
        if choice == "onnxruntime" and not onnxruntimeAvailable():
            raise _error("--onnx-backend onnxruntime: onnxruntime is not installed "
                         "(pip install onnxruntime)")
        self._session = self._net = None
        if choice == "onnxruntime" or (choice == "auto" and onnxruntimeAvailable()):
            self._session = _openSession(path)
            self._input = self._session.get_inputs()[0].name
            self.backend = "onnxruntime/" + self._session.get_providers()[0]
        else:
            self._net = _readNet(path)
            self.backend = "cv2.dnn"

    def detect(self, image, stream: str) -> list:
        import cv2

        width, height = self._options.size
        blob = cv2.dnn.blobFromImage(
            image, 1 / 255.0, (width, height), swapRB=True, crop=False
        )
        if self._session is not None:
            output = self._session.run(None, {self._input: blob})[0]
        else:
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
