# -*- test-case-name: tests.test_inference -*-
"""
The receiver's C{--detect}: L{InferenceService} owns the worker threads and
the engine over them, L{InferenceConfig} is its typed configuration and
L{attachInference} joins the detector to a receiver.

The parts live beside this module and are re-exported here:
L{imageproto.features.inference.scheduler} decides which frames the
detector sees and when (L{InferenceEngine}), on the reactor;
L{imageproto.features.inference.processor} is the worker-thread side
(L{FrameProcessor}); L{imageproto.features.inference.consumer} joins the
receiver's pipeline (L{InferenceConsumer}).
"""

from __future__ import annotations

from functools import partial

from attrs import field, frozen
from attrs.validators import ge, in_
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
    "InferenceConfig",
    "attachInference",
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
            "detector {name} running in {workers} worker threads{on}, replying {reply}",
            name=self.spec.name,
            workers=self.workers,
            reply=self.reply,
            backend=self.spec.backend,
            on=f" on {self.spec.backend}" if self.spec.backend else "",
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


@frozen
class InferenceConfig:
    """
    Run a detector over every received frame.

    @ivar detector: the checked L{DetectorSpec}.
    @ivar workers: worker threads (frames processed at once).
    @ivar reply: what goes back to senders, one of L{REPLY_MODES}.
    """

    detector: DetectorSpec
    workers: int = field(default=1, validator=ge(1))
    reply: str = field(default="detections", validator=in_(REPLY_MODES))


def attachInference(receiver, config: InferenceConfig) -> InferenceService:
    """
    Add the detector to an L{imageproto.receiver.service.ReceiverService}
    as one more consumer of its pipeline, in a child service owning the
    worker threads, and announce its RESULTs in WELCOME.
    """
    service = InferenceService(
        config.detector,
        workers=config.workers,
        reply=config.reply,
        reactor=receiver.reactor,
    )
    service.setServiceParent(receiver)
    receiver.addConsumer(service.consumer)
    spec = config.detector
    receiver.registry.addSection(
        "detector", lambda: {"name": spec.name, "backend": spec.backend}
    )
    if config.reply != "none":
        receiver.advertise(wire.SCAP_DETECT)
    if config.reply == "annotated":
        receiver.advertise(wire.SCAP_ANNOTATED)
    return service
