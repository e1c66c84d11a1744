# -*- test-case-name: tests.test_inference -*-
"""
The thread side of inference: decode a frame, run the detector, draw and
encode the marked-up frame.  Everything here runs in worker threads and
hands back plain values (L{Processed}); L{imageproto.features.inference.scheduler}
decides, on the reactor, which frames get here.
"""

from __future__ import annotations

import threading
import time

from attrs import field, frozen

from imageproto import wire
from imageproto.common.jpeg import decodeJpeg, encodeJpeg
from imageproto.features.inference.detectors import DetectorSpec, annotate

__all__ = ["FrameProcessor", "Processed"]

_U32 = 0xFFFFFFFF


@frozen
class Processed:
    """
    What a worker thread hands back for one frame.

    @ivar jpeg: the marked-up frame, or C{b""} when not asked for.
    """

    detections: list
    micros: int
    jpeg: bytes = field(repr=False, default=b"")

    def toResult(self, seq: int) -> wire.Result | None:
        """
        The RESULT answering frame C{seq}, or C{None} when the detections
        cannot travel (not JSON, or too large for the message).
        """
        try:
            result = wire.Result(seq, list(self.detections), self.micros, self.jpeg)
            wire.encodeMessage(result)
        except (TypeError, ValueError):
            return None
        return result


class FrameProcessor:
    """
    The thread side: decode, detect, draw, encode.  Called only from worker
    threads; each thread gets its own detector instance.
    """

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self._local = threading.local()

    def _detector(self):
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self.spec.factory()
        return detector

    def __call__(self, stream: str, jpeg: bytes, annotated: bool) -> Processed:
        started = time.perf_counter()
        if self.spec.echo:
            # Nothing to find: skip decoding, send the frame back as it came.
            return Processed([], _micros(started), jpeg if annotated else b"")
        image = decodeJpeg(jpeg)
        detections = self._detector().detect(image, stream)
        out = encodeJpeg(annotate(image, detections)) if annotated else b""
        return Processed(list(detections), _micros(started), out)


def _micros(started: float) -> int:
    return min(int((time.perf_counter() - started) * 1e6), _U32)
