# -*- test-case-name: tests.test_bus -*-
"""
C{twistd imageproto-worker}: run a detector on the frames receivers publish
to a Redis Streams bus (C{twistd imageproto --bus URL}), as one of a fleet.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.python import usage

__all__ = ["Options", "makeService"]


def _positive(kind):
    def coerce(value):
        number = kind(value)
        if not 0 < number < float("inf"):
            raise ValueError(f"{value} is not a positive number")
        return number

    coerce.coerceDoc = "A positive number."
    return coerce


class Options(usage.Options):
    synopsis = "--bus URL --detect NAME [options]"
    longdesc = (
        "Take frames from the Redis bus that imageproto receivers started with "
        "--bus publish to, run a detector on each, and send the RESULT back to "
        "the receiver holding the frame's sender.  Workers share frames through "
        "one consumer group (--group); a worker that dies mid-frame has its "
        "frames claimed by another after --claim-after seconds."
    )

    optParameters = [
        ["bus", None, None, "The Redis: redis://[:PASSWORD@]HOST:PORT/DB or rediss://..."],
        ["detect", None, None,
         "The detector: people, faces, cats, motion, echo, onnx:PATH or "
         "package.module:Class."],
        ["workers", None, 1, "Frames processed at once (threads).", _positive(int)],
        ["claim-after", None, 30.0,
         "Seconds a frame may stay with another worker before this one claims it.",
         _positive(float)],
        ["max-age", None, 2.0,
         "Skip live frames older than this many seconds (acknowledged, not processed).",
         _positive(float)],
        ["group", None, "detect", "The consumer group this worker reads in."],
        ["name", None, None, "This worker's name [default: host-pid]."],
        ["onnx-size", None, "640", "onnx: network input size, N or WxH."],
        ["onnx-classes", None, None, "onnx: class names file, one per line."],
        ["onnx-layout", None, "auto", "onnx: output layout, auto, yolov5 or yolov8."],
        ["confidence", None, 0.25, "onnx: minimum confidence.", float],
        ["nms", None, 0.45, "onnx: non-maximum suppression IoU threshold.", float],
    ]

    def postOptions(self) -> None:
        from imageproto.features.bus.link import checkUrl
        from imageproto.features.inference.engine import checkOptions
        from imageproto.wire import isStreamName

        if not self["bus"]:
            raise usage.UsageError("--bus URL is required")
        if not self["detect"]:
            raise usage.UsageError("--detect NAME is required")
        try:
            checkUrl(self["bus"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        for option in ("group", "name"):
            if self[option] is not None and not isStreamName(self[option]):
                raise usage.UsageError(
                    f"--{option} {self[option]!r}: 1-64 characters of A-Z a-z 0-9 . _ -"
                )
        checkOptions(self)


def makeService(options, reactor=None) -> MultiService:
    """
    The worker C{options} describe; connects nothing until it starts.
    """
    from imageproto.features.bus.worker import WorkerConfig, WorkerService

    top = MultiService()
    WorkerService(WorkerConfig.fromOptions(options), reactor).setServiceParent(top)
    return top
