# -*- test-case-name: tests.test_inference -*-
"""
The receiver's C{--detect}: L{InferenceService} owns the worker threads and
the engine over them, L{checkOptions} checks the detection options and
L{attachToReceiver} joins the detector to a receiver.

The parts live beside this module and are re-exported here:
L{imageproto.features.inference.scheduler} decides which frames the
detector sees and when (L{InferenceEngine}), on the reactor;
L{imageproto.features.inference.processor} is the worker-thread side
(L{FrameProcessor}); L{imageproto.features.inference.consumer} joins the
receiver's pipeline (L{InferenceConsumer}).
"""

from __future__ import annotations

import os
from functools import partial

from twisted.application.service import Service
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from imageproto import wire
from imageproto.common.reactor import defaultReactor
from imageproto.features.inference.consumer import InferenceConsumer
from imageproto.features.inference.detectors import DetectorSpec
from imageproto.features.inference.processor import FrameProcessor, Processed
from imageproto.features.inference.scheduler import (
    REPLY_MODES,
    InferenceEngine,
    InferenceStats,
)

__all__ = [
    "REPLY_MODES",
    "FrameProcessor",
    "Processed",
    "InferenceStats",
    "InferenceEngine",
    "InferenceService",
    "InferenceConsumer",
    "checkOptions",
    "attachToReceiver",
]


class InferenceService(Service):
    """
    Owns the worker thread pool and the L{InferenceEngine} over it.

    @ivar engine: set once the service has started; C{submit} frames to it.
    """

    log = Logger()

    def __init__(
        self,
        spec: DetectorSpec,
        workers: int = 1,
        reply: str = "detections",
        reactor=None,
        maxQueued: int = 32,
    ) -> None:
        reactor = defaultReactor(reactor)
        self.spec = spec
        self.reply = reply
        self.workers = workers
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=workers, name="inference")
        self.engine = InferenceEngine(
            FrameProcessor(spec),
            partial(deferToThreadPool, reactor, self._pool),
            workers=workers,
            reply=reply,
            serial=spec.serial,
            maxQueued=maxQueued,
        )
        self.consumer = InferenceConsumer(self.engine, reply)

    def startService(self) -> None:
        super().startService()
        self._pool.start()
        self.log.info(
            "detector {name} running in {workers} worker threads, replying {reply}",
            name=self.spec.name,
            workers=self.workers,
            reply=self.reply,
        )

    def stopService(self):
        super().stopService()
        totals = self.engine.totals()
        self.log.info(
            "detector {name}: {processed} frames processed, {skipped} stale "
            "live frames skipped, {failed} failed",
            name=self.spec.name,
            processed=totals.processed,
            skipped=totals.skipped,
            failed=totals.failed,
        )
        self._pool.stop()


def _size(value: str) -> tuple:
    text = str(value).lower().strip()
    width, _, height = text.partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError:
        raise ValueError(f"--onnx-size {value!r} is not N or WxH") from None
    if min(size) < 1:
        raise ValueError(f"--onnx-size {value!r} must be positive")
    return size


def _port(value: str, option: str) -> str:
    from twisted.internet.endpoints import serverFromString

    if value.isdigit():
        if int(value) > 65535:
            raise ValueError(f"{option} {value}: port numbers end at 65535")
        return f"tcp:{value}"
    try:
        serverFromString(None, value)
    except Exception as e:
        raise ValueError(f"{option} {value!r} is not a port or endpoint ({e})") from None
    return value


def checkOptions(options) -> None:
    """
    Check the receiver's detection and compatibility options (called from
    the tap's C{postOptions}), loading the detector once so that a missing
    or unreadable model stops twistd before any sender is accepted.  Sets
    C{options["detector"]} to a L{DetectorSpec} or C{None}.

    @raise twisted.python.usage.UsageError: naming what is wrong.
    """
    from twisted.python import usage

    from imageproto.features.inference.detectors import (
        DetectorError,
        OnnxOptions,
        loadDetector,
        readClassNames,
    )

    try:
        reply = options.get("reply")
        if reply is None:
            reply = "detections" if options.get("detect") else "none"
        if reply not in REPLY_MODES:
            raise ValueError(f"--reply must be one of {', '.join(REPLY_MODES)}")
        if reply != "none" and not options.get("detect"):
            raise ValueError(f"--reply {reply} needs --detect")
        options["reply"] = reply
        if int(options.get("workers", 1)) < 1:
            raise ValueError("--workers must be at least 1")
        for option in ("compat-base64", "compat-le32"):
            if options.get(option) is not None:
                options[option] = _port(options[option], "--" + option)
        options["detector"] = None
        name = options.get("detect")
        if name is None:
            return
        classes = ()
        if options.get("onnx-classes"):
            classes = readClassNames(os.path.abspath(options["onnx-classes"]))
        onnx = OnnxOptions(
            size=_size(options.get("onnx-size", "640")),
            classes=classes,
            confidence=float(options.get("confidence", 0.25)),
            nms=float(options.get("nms", 0.45)),
            layout=options.get("onnx-layout", "auto"),
        )
        if onnx.layout not in ("auto", "yolov5", "yolov8"):
            raise ValueError("--onnx-layout must be auto, yolov5 or yolov8")
        options["detector"] = loadDetector(name, onnx)
    except (DetectorError, ValueError) as e:
        raise usage.UsageError(str(e)) from None


def attachToReceiver(receiver, options) -> InferenceService | None:
    """
    Add the detector (C{options["detector"]}, from L{checkOptions}) to an
    L{imageproto.receiver.service.ReceiverService} as one more consumer of
    its pipeline, and announce its RESULTs in WELCOME.

    @return: the L{InferenceService}, or C{None} without C{--detect}.
    """
    spec = options.get("detector")
    if spec is None:
        return None
    reply = options.get("reply", "detections")
    service = InferenceService(
        spec, workers=options.get("workers", 1), reply=reply, reactor=receiver.reactor
    )
    service.setServiceParent(receiver)
    receiver.addConsumer(service.consumer)
    if reply != "none":
        receiver.advertise(wire.SCAP_DETECT)
    if reply == "annotated":
        receiver.advertise(wire.SCAP_ANNOTATED)
    return service
