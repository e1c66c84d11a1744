# -*- test-case-name: tests.test_detectors -*-
"""
What detectors report, shared by the built-in ones, C{onnx:PATH} and the
loader: a detection as a plain dict (L{detection}), a classifier's raw score
mapped to a confidence (L{squash}), a frame marked up with its detections
(L{annotate}), and L{DetectorError} for a detector that cannot be built.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["DetectorError", "detection", "squash", "annotate"]


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
