# -*- test-case-name: tests.test_bus -*-
"""
The receiver's bus as a service: L{BusService} runs the publisher (a
consumer of the pipeline) and the answer reader over one Redis link (or one
per server when C{--bus} names several; see
L{imageproto.features.bus.shards}), and L{attachBus} adds it to a receiver.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.logger import Logger

from imageproto import wire
from imageproto.features.bus import keys
from imageproto.features.bus.answers import AnswerReader, AwaitingAnswers
from imageproto.features.bus.leases import StreamLeases
from imageproto.features.bus.publisher import BusConfig, BusPublisher

__all__ = ["BusService", "attachBus"]


class BusService(Service):
    """
    Runs the receiver's bus: the link's threads, the loop reading this
    receiver's results stream, the monitor's poll of Redis, and the leases
    on its streams' names (L{StreamLeases}).

    @param link: one link to use instead of connecting (tests).
    @param links: one link per Redis server of C{config.urls}, in order, to
        use instead of connecting (tests); by default one
        L{imageproto.features.bus.link.RedisLink} per server.
    @ivar publisher: the L{BusPublisher} (a pipeline consumer).
    """

    log = Logger()

    def __init__(
        self, config: BusConfig, reactor, link=None, monitorInterval: float = 1.0, links=None
    ) -> None:
        from imageproto.features.bus.link import RedisLink, connect
        from imageproto.features.bus.shards import ShardedPublish

        self.config = config
        self.reactor = reactor
        if links is None:
            if link is not None:
                links = [link]
            else:
                links = [
                    RedisLink(reactor, connect(url), name=f"bus-{index}")
                    for index, url in enumerate(config.urls)
                ]
        self.links = list(links)
        self.link = self.links[0]
        self.resultsKey = keys.resultsKey(config.receiverId)
        awaiting = AwaitingAnswers(config.maxAwaiting) if config.replies else None
        publish = self.link.publish if len(self.links) == 1 else ShardedPublish(self.links)
        self.publisher = BusPublisher(
            publish,
            config.receiverId,
            reactor,
            awaiting,
            maxBacklog=config.maxBacklog,
            maxLive=config.maxLive,
            liveLength=config.liveLength,
        )
        self.reader = AnswerReader(awaiting) if awaiting is not None else None
        self.leases = StreamLeases(self.link.runInThread, self.link.client, config.receiverId, reactor)
        self.monitorInterval = monitorInterval
        # Per server: the last results entry read, and what it reports.
        self._afters = [b"0-0"] * len(self.links)
        self._observations: list = [{} for _ in self.links]
        self._calls: list = []
        self._readersUp = [True] * len(self.links)

    @property
    def _observed(self) -> dict:
        return _merged(self._observations)

    def startService(self) -> None:
        super().startService()
        for link in self.links:
            link.start()
        self.log.info(
            "bus: publishing frames as receiver {id}, answers from {key}{servers}",
            id=self.config.receiverId,
            key=self.resultsKey,
            servers=f" on {len(self.links)} Redis servers" if len(self.links) > 1 else "",
        )
        for index in range(len(self.links)):
            if self.reader is not None:
                self._read(index)
            self._observe(index)
        if self.reader is not None:
            self._checkOverdue()
        self.leases.start()

    def stopService(self):
        super().stopService()
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        self.leases.stop()
        self.publisher.close()
        # Joins the threads: a blocked XREAD returns within its block time.
        for link in self.links:
            link.stop()

    def _later(self, delay: float, f) -> None:
        self._calls = [c for c in self._calls if c.active()]
        if self.running:
            self._calls.append(self.reactor.callLater(delay, f))

    def _read(self, index: int = 0) -> None:
        if not self.running:
            return
        d = self.links[index].readAnswers(self.resultsKey, self._afters[index], 500)

        def got(entries):
            if not self._readersUp[index]:
                self.log.info("bus: reading answers again")
            self._readersUp[index] = True
            if entries:
                self._afters[index] = entries[-1][0]
                self.reader.entriesReceived(entries)
            self._read(index)

        def failed(failure):
            if self._readersUp[index]:
                self.log.error("bus: reading answers failed ({error}); retrying",
                               error=failure.getErrorMessage())
            self._readersUp[index] = False
            self._later(0.5, lambda: self._read(index))

        d.addCallbacks(got, failed)

    def _checkOverdue(self) -> None:
        if not self.running:
            return
        for frame in self.reader.awaiting.overdue(self.reactor.seconds(), self.config.answerTimeout):
            self.log.info(
                "bus: no answer to frame {seq} of {stream} in {timeout} s; publishing it again",
                seq=frame.seq,
                stream=frame.stream,
                timeout=self.config.answerTimeout,
            )
            self.publisher.republish(frame)
        self._later(min(1.0, self.config.answerTimeout / 4), self._checkOverdue)

    def _observe(self, index: int = 0) -> None:
        if not self.running:
            return
        d = self.links[index].observe(self.resultsKey)

        def got(observed):
            self._observations[index] = observed

        def failed(failure):
            self._observations[index] = {"error": failure.getErrorMessage()}

        d.addCallbacks(got, failed)
        d.addBoth(lambda _: self._later(self.monitorInterval, lambda: self._observe(index)))

    def snapshot(self) -> dict:
        """
        The stats file's (and C{/metrics}') C{"bus"} section.
        """
        section = {"receiver_id": self.config.receiverId}
        section.update(self.publisher.snapshot())
        if self.reader is not None:
            section.update(self.reader.snapshot())
        observed = self._observed
        section["redis"] = {
            "streams": observed.get("streams", {}),
            "results_length": observed.get("results_length"),
            "error": observed.get("error"),
        }
        section["workers"] = observed.get("workers", {})
        section["leases"] = self.leases.snapshot()
        return section


def _merged(observations: list) -> dict:
    """
    One server's observation as it is; several servers' merged: streams and
    workers joined, results lengths summed, the first error kept.
    """
    if len(observations) == 1:
        return observations[0]
    merged: dict = {"streams": {}, "workers": {}, "results_length": None, "error": None}
    for observed in observations:
        merged["streams"].update(observed.get("streams", {}))
        for worker, age in observed.get("workers", {}).items():
            known = merged["workers"].get(worker)
            merged["workers"][worker] = age if known is None else min(known, age)
        length = observed.get("results_length")
        if length is not None:
            merged["results_length"] = (merged["results_length"] or 0) + length
        if merged["error"] is None and observed.get("error"):
            merged["error"] = observed["error"]
    return merged


def attachBus(receiver, config: BusConfig | None) -> BusService | None:
    """
    Publish C{receiver}'s frames to the bus C{config} describes and answer
    them with the workers' RESULTs (announced in WELCOME); add the C{"bus"}
    section to its statistics.

    @param receiver: an L{imageproto.receiver.service.ReceiverService}.
    @return: the L{BusService}, or C{None} without a config.
    """
    if config is None:
        return None
    service = BusService(config, receiver.reactor)
    service.setServiceParent(receiver)
    receiver.addConsumer(service.publisher)
    receiver.registry.addSection("bus", service.snapshot)
    receiver.registry.addAttachListener(service.leases)
    if config.replies:
        receiver.advertise(wire.SCAP_DETECT)
    return service
