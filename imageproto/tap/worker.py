# -*- test-case-name: tests.test_bus -*-
"""
C{twistd imageproto-worker}: run a detector on the frames receivers publish
to a Redis Streams bus (C{twistd imageproto --bus URL}), as one of a fleet.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from imageproto.tap import CommandOptions, bus, checks, detect
from imageproto.tap.config import detectorSpec

__all__ = ["Options", "makeService"]

_CHECKS = [
    ("workers", checks.number(int, 1)),
    ("claim-after", checks.number(float, 0.001)),
    ("max-age", checks.number(float, 0.001)),
]


class Options(CommandOptions):
    synopsis = "--bus URL --detect NAME [options]"
    longdesc = (
        "Take frames from the Redis bus that imageproto receivers started with "
        "--bus publish to, run a detector on each, and send the RESULT back to "
        "the receiver holding the frame's sender.  Workers share frames through "
        "one consumer group (--group); a worker that dies mid-frame has its "
        "frames claimed by another after --claim-after seconds."
    )

    optParameters = [
        ["bus", None, None, "The Redis: redis://[:PASSWORD@]HOST:PORT/DB or rediss://...; "
         "several separated by commas (the receivers' list): this worker reads "
         "from every one."],
        ["workers", None, 1, "Frames processed at once (threads)."],
        ["claim-after", None, 30.0,
         "Seconds a frame may stay with another worker before this one claims it."],
        ["max-age", None, 2.0,
         "Skip live frames older than this many seconds (acknowledged, not processed)."],
        ["group", None, "detect", "The consumer group this worker reads in."],
        ["name", None, None, "This worker's name [default: host-pid]."],
    ] + detect.OPTIONS

    def postOptions(self) -> None:
        if not self["bus"]:
            raise usage.UsageError("--bus URL is required")
        if not self["detect"]:
            raise usage.UsageError("--detect NAME is required")
        bus.checkUrl(self["bus"])
        bus.checkName("group", self["group"])
        bus.checkName("name", self["name"])
        checks.apply(self, _CHECKS)
        detect.checkOptions(self)
        # Loaded once here, so that a missing model is a usage error.
        self.config = bus.workerConfig(self, detectorSpec(self))


class _WorkerServices(MultiService):
    """
    The worker's services, one per Redis server; says once at start which
    detector runs on which backend and on how many servers.
    """

    log = Logger()

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def startService(self) -> None:
        detector = self.config.detector
        self.log.info(
            "worker {name}: detector {detector} on {backend}, reading {servers} Redis server(s)",
            name=self.config.name,
            detector=getattr(detector, "name", detector),
            backend=getattr(detector, "backend", None) or "builtin",
            servers=len(list(self)),
        )
        super().startService()


def makeService(options, reactor=None) -> MultiService:
    """
    The worker C{options} describe, with one
    L{imageproto.features.bus.worker.WorkerService} per Redis server of
    C{--bus}; connects nothing until it starts.

    @param options: parsed L{Options}; their C{config} is used.
    """
    from attrs import evolve

    from imageproto.features.bus.worker import WorkerService

    top = _WorkerServices(options.config)
    # One service (its client, its threads) per Redis server: a frame is
    # answered on the server it came from.
    for url in bus.busUrls(options):
        WorkerService(evolve(options.config, url=url), reactor).setServiceParent(top)
    return top
