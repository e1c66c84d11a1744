# -*- test-case-name: tests.test_tap_receiver -*-
"""
The detection options C{twistd imageproto} and C{twistd imageproto-worker}
share (C{--detect}, C{--confidence}, C{--onnx-*}, C{--nms}), and their check.
The detector itself is loaded by L{imageproto.tap.config.detectorSpec}.
"""

from __future__ import annotations

from twisted.python import usage

__all__ = ["OPTIONS", "checkOptions"]

OPTIONS = [
        ["detect", None, None,
         "Run a detector on every frame: people, faces, cats, motion, echo, "
         "onnx:PATH or package.module:Class (see imageproto.features.inference.detectors)."],
        ["onnx-size", None, "640", "onnx: network input size, N or WxH."],
        ["onnx-classes", None, None, "onnx: class names file, one per line."],
        ["onnx-layout", None, "auto", "onnx: output layout, auto, yolov5 "
         "([1,N,5+C]) or yolov8 ([1,4+C,N])."],
        ["onnx-backend", None, "auto", "onnx: where the model runs: auto "
         "(onnxruntime when installed, on CUDA when it offers it, else "
         "cv2.dnn), onnxruntime or cv2."],
        ["confidence", None, None,
         "Minimum confidence (0 to 1) for a detection to be reported, for "
         "every detector, package.module:Class included [default: 0.25; "
         "0 for motion, echo and package.module:Class].", float],
        ["nms", None, 0.45, "onnx: non-maximum suppression IoU threshold.", float],
]


def checkOptions(options) -> None:
    """
    Give C{--confidence} its per-detector default and check its range.

    @raise usage.UsageError: naming what is wrong.
    """
    from imageproto.features.inference.detectors import defaultConfidence

    if options["confidence"] is None:
        options["confidence"] = defaultConfidence(options["detect"])
    elif not 0.0 <= options["confidence"] <= 1.0:
        raise usage.UsageError(
            f"--confidence {options['confidence']}: must be between 0 and 1"
        )
