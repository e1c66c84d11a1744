# -*- test-case-name: tests.test_bus_hosted,tests.test_bus_redis -*-
"""
L{BusConsumersService}: the receiver's consumers a worker hosts (C{--save-dir},
C{--record-dir}, C{--web}, C{--stats-file}), each kind reading every
receiver's frames in its own consumer group through a
L{imageproto.features.bus.hosted.GroupReader}.
"""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from imageproto.features.bus import keys
from imageproto.features.bus.hosted import BusStreams, GroupReader, HostedPipeline

__all__ = ["BusConsumersService"]


def _stopInOrder(*groups) -> Deferred:
    d = succeed(None)
    for services in groups:
        d.addCallback(lambda _, s=services: DeferredList(
            [maybeDeferred(x.stopService) for x in s if x.running], consumeErrors=True))
    return d


class BusConsumersService(MultiService):
    """
    The consumers a worker hosts (see the module docstring): one
    L{GroupReader} per group, the consumers' own services (the recorder,
    the web server), the statistics reporter and the threads.

    Stopping stops the readers first (their last frames acknowledged), then
    the consumers, then the reporter (its final file), then the threads.

    @param config: a L{imageproto.features.bus.worker.WorkerConfig}.
    @param client: a redis-py client (by default one for C{config.url}).
    """

    log = Logger()

    def __init__(self, config, reactor, client=None, idleAfter: float = 10.0) -> None:
        from imageproto.features.bus.worker import WorkerLoop
        from imageproto.receiver.service import StatsReporter, ThreadPoolService

        super().__init__()
        self.config = config
        self.reactor = reactor
        if client is None:
            from imageproto.features.bus.link import connect

            client = connect(config.url)
        self.client = client
        groups = self._groups(config)
        # One thread per group's blocking read, and some for acks and files.
        self.pool = ThreadPoolService(reactor, maxThreads=2 * len(groups) + 4, name="bus-consumers")
        self.pool.setServiceParent(self)
        self.readers: list[GroupReader] = []
        self.consumers: list = []
        self.registry = None
        self.hub = self.recorder = self.web = self.reporter = None
        for group, kinds in groups:
            pipeline = HostedPipeline()
            streams = BusStreams(reactor, pipeline, idleAfter=idleAfter)
            view = group.startswith(keys.VIEW_GROUP_PREFIX)
            loop = WorkerLoop(
                client, None, consumer=f"{config.name}-{group}", worker=config.name,
                group=group, claimAfter=config.claimAfter, startId="$" if view else "0",
            )
            for kind in kinds:
                self._attach(kind, pipeline, streams)
            if self.registry is None or "web" in kinds:
                self.registry = streams
            reader = GroupReader(loop, streams, self.pool.runInThread, reactor)
            reader.setServiceParent(self)
            self.readers.append(reader)
        if self.web is not None:
            self._attachWeb()
        self.reporter = StatsReporter(
            self.registry, reactor, self.pool.runInThread,
            logInterval=config.statsInterval, statsFile=config.statsFile,
        )
        self.reporter.setServiceParent(self)
        self._idle = None

    @staticmethod
    def _groups(config) -> list:
        kinds = [k for k, on in (("save", config.saveDir), ("record", config.recording),
                                 ("web", config.web)) if on is not None]
        if not kinds:
            kinds = ["stats"]
        if config.consumerGroup is not None:
            return [(config.consumerGroup, kinds)]
        names = {"save": "save", "record": "record", "web": f"{keys.VIEW_GROUP_PREFIX}-{config.name}",
                 "stats": "stats"}
        return [(names[k], [k]) for k in kinds]

    def _attach(self, kind: str, pipeline: HostedPipeline, streams: BusStreams) -> None:
        config = self.config
        if kind == "save":
            from imageproto.receiver.savedir import SaveDirSink

            pipeline.addConsumer(SaveDirSink(config.saveDir, self.pool.runInThread))
        elif kind == "record":
            from imageproto.features.recording import Recorder

            recording = config.recording
            self.recorder = Recorder(recording.directory, segmentSeconds=recording.segmentSeconds,
                                     format=recording.format)
            pipeline.addConsumer(self.recorder)
            self.recorder.setServiceParent(self)
        elif kind == "web":
            from imageproto.features.web.viewer import LatestDetections
            from imageproto.receiver.consumers import LatestFrameHub

            self.hub = LatestFrameHub()
            self.detections = LatestDetections()
            pipeline.addConsumer(self.hub)
            pipeline.addConsumer(self.detections)
            self.web = (pipeline, streams)

    def _attachWeb(self) -> None:
        from imageproto.features.web.viewer import makeWebService

        pipeline, streams = self.web
        web = self.config.web
        self.web, self.webRoot = makeWebService(
            web.endpoint, self.hub, streams, pipeline, reactor=self.reactor,
            recorder=self.recorder, detections=self.detections,
            maxConnections=web.maxConnections, idleTimeout=web.idleTimeout,
        )
        self.web.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "worker {name}: hosting consumers in groups {groups}",
            name=self.config.name, groups=", ".join(r.group for r in self.readers),
        )
        self._idle = LoopingCall(self._checkIdle)
        self._idle.clock = self.reactor
        self._idle.start(1.0, now=False)

    def _checkIdle(self) -> None:
        for reader in self.readers:
            reader.streams.checkIdle()

    def stopService(self):
        Service.stopService(self)
        if self._idle is not None and self._idle.running:
            self._idle.stop()
        last = [self.reporter, self.pool]
        middle = [c for c in self if c not in last and c not in self.readers]
        d = _stopInOrder(self.readers, middle)
        d.addCallback(lambda _: DeferredList(
            [r.streams.pipeline.close() for r in self.readers], consumeErrors=True))
        d.addCallback(lambda _: _stopInOrder([self.reporter], [self.pool]))
        d.addCallback(lambda _: self.client.close())
        return d
