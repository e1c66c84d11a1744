# -*- test-case-name: tests.test_bus -*-
"""
C{twistd imageproto-worker}: run a detector on the frames receivers publish
to a Redis Streams bus (C{twistd imageproto --bus URL}), as one of a fleet;
and host the receiver's other consumers (C{--save-dir}, C{--record-dir},
C{--web}, C{--stats-file}) on the bus's side, each reading every
receiver's frames in its own consumer group.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from imageproto.tap import CommandOptions, bus, checks, commandReactor, detect
from imageproto.tap.config import detectorSpec

__all__ = ["Options", "makeService"]

_CHECKS = [
    ("workers", checks.number(int, 1)),
    ("claim-after", checks.number(float, 0.001)),
    ("max-age", checks.number(float, 0.001)),
    ("save-dir", checks.directory),
    ("record-dir", checks.directory),
    ("web", checks.endpoint),
    ("stats-file", checks.newFile),
    ("stats-interval", checks.number(float, 0.001)),
    ("web-max-connections", checks.number(int, 1)),
    ("web-idle-timeout", checks.number(float, 0.001)),
]


class Options(CommandOptions):
    synopsis = "--bus URL (--detect NAME | --save-dir DIR | --record-dir DIR | --web PORT | --stats-file FILE) [options]"
    longdesc = (
        "Take frames from the Redis bus that imageproto receivers started with "
        "--bus publish to.  With --detect, run a detector on each and send the "
        "RESULT back to the receiver holding the frame's sender; workers share "
        "frames through one consumer group (--group); a worker that dies "
        "mid-frame has its frames claimed by another after --claim-after "
        "seconds.  With --save-dir, --record-dir, --web or --stats-file, host "
        "the receiver's consumers for the streams of every receiver on the "
        "bus, each reading in its own group (save, record, view-NAME, stats; "
        "or all in --group)."
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
        ["group", None, None,
         "The consumer group this worker reads in [default: detect with "
         "--detect; otherwise one per consumer: save, record, view-NAME, stats]."],
        ["name", None, None, "This worker's name [default: host-pid]."],
        ["save-dir", None, None,
         "Write every frame on the bus under DIR/<stream>/<session>/<seq>.jpg "
         "(group save), as the receiver's --save-dir."],
        ["record-dir", None, None,
         "Record every stream on the bus as video files in DIR (group record)."],
        ["record-format", None, "mkv", "Recording format: mkv or mp4."],
        ["segment-seconds", None, 300.0, "Seconds of video per recording file.",
         checks.coercer(float, above=0, doc="A positive number.")],
        ["web", None, None,
         "Serve the live viewer, /api/streams and /metrics of every stream on "
         "the bus on this port number or server endpoint (group view-NAME)."],
        ["web-max-connections", None, 512, "Connections to --web over this are closed at once."],
        ["web-idle-timeout", None, 30.0,
         "Close a --web connection with no request in progress after this many seconds."],
        ["stats-file", None, None,
         "Write the bus streams' statistics as JSON to this file every second "
         "and at shutdown."],
        ["stats-interval", None, 5.0, "Seconds between statistics log lines."],
    ] + detect.OPTIONS

    def postOptions(self) -> None:
        if not self["bus"]:
            raise usage.UsageError("--bus URL is required")
        hosted = [o for o in ("save-dir", "record-dir", "web", "stats-file") if self[o]]
        if not self["detect"] and not hosted:
            raise usage.UsageError(
                "--detect NAME is required (or a consumer to host: --save-dir, "
                "--record-dir, --web or --stats-file)"
            )
        if self["detect"] and hosted and self["group"]:
            raise usage.UsageError(
                "--group names the detectors' group with --detect; the hosted "
                "consumers then read in their own groups"
            )
        bus.checkUrl(self["bus"])
        if hosted and len(bus.busUrls(self)) > 1:
            raise usage.UsageError(
                "--save-dir, --record-dir, --web and --stats-file read one Redis "
                "server: give --bus one URL (run one such worker per server)"
            )
        bus.checkName("group", self["group"])
        bus.checkName("name", self["name"])
        checks.apply(self, _CHECKS)
        from imageproto.features.recording import FORMATS

        if self["record-format"] not in FORMATS:
            raise usage.UsageError(
                f"--record-format {self['record-format']}: must be one of {', '.join(FORMATS)}"
            )
        detect.checkOptions(self)
        # Loaded once here, so that a missing model is a usage error.
        self.config = bus.workerConfig(self, detectorSpec(self) if self["detect"] else None)


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
        if detector is not None:
            self.log.info(
                "worker {name}: detector {detector} on {backend}, reading {servers} "
                "Redis server(s)",
                name=self.config.name,
                detector=getattr(detector, "name", detector),
                backend=getattr(detector, "backend", None) or "builtin",
                servers=sum(1 for s in self if type(s).__name__ == "WorkerService"),
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

    config = options.config
    reactor = commandReactor(reactor)
    top = _WorkerServices(config)
    if config.detector is not None:
        from imageproto.features.bus.worker import WorkerService

        # One service (its client, its threads) per Redis server: a frame is
        # answered on the server it came from.
        for url in bus.busUrls(options):
            WorkerService(evolve(config, url=url), reactor).setServiceParent(top)
    if config.hostsConsumers:
        from imageproto.features.bus.hosting import BusConsumersService

        BusConsumersService(config, reactor).setServiceParent(top)
    return top
