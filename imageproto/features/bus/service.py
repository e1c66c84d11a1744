# -*- test-case-name: tests.test_bus -*-
"""
The receiver's bus as a service: L{BusService} runs the publisher (a
consumer of the pipeline) and the answer reader over one Redis link, and
L{attachBus} adds it to a receiver.
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

    @ivar publisher: the L{BusPublisher} (a pipeline consumer).
    """

    log = Logger()

    def __init__(self, config: BusConfig, reactor, link=None, monitorInterval: float = 1.0) -> None:
        from imageproto.features.bus.link import RedisLink, connect

        self.config = config
        self.reactor = reactor
        self.link = link if link is not None else RedisLink(reactor, connect(config.url))
        self.resultsKey = keys.resultsKey(config.receiverId)
        awaiting = AwaitingAnswers(config.maxAwaiting) if config.replies else None
        self.publisher = BusPublisher(
            self.link.publish,
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
        self._after = b"0-0"
        self._observed: dict = {}
        self._calls: list = []
        self._readerUp = True

    def startService(self) -> None:
        super().startService()
        self.link.start()
        self.log.info(
            "bus: publishing frames as receiver {id}, answers from {key}",
            id=self.config.receiverId,
            key=self.resultsKey,
        )
        if self.reader is not None:
            self._read()
            self._checkOverdue()
        self._observe()
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
        self.link.stop()

    def _later(self, delay: float, f) -> None:
        self._calls = [c for c in self._calls if c.active()]
        if self.running:
            self._calls.append(self.reactor.callLater(delay, f))

    def _read(self) -> None:
        if not self.running:
            return
        d = self.link.readAnswers(self.resultsKey, self._after, 500)

        def got(entries):
            if not self._readerUp:
                self.log.info("bus: reading answers again")
            self._readerUp = True
            if entries:
                self._after = entries[-1][0]
                self.reader.entriesReceived(entries)
            self._read()

        def failed(failure):
            if self._readerUp:
                self.log.error("bus: reading answers failed ({error}); retrying",
                               error=failure.getErrorMessage())
            self._readerUp = False
            self._later(0.5, self._read)

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

    def _observe(self) -> None:
        if not self.running:
            return
        d = self.link.observe(self.resultsKey)

        def got(observed):
            self._observed = observed

        def failed(failure):
            self._observed = {"error": failure.getErrorMessage()}

        d.addCallbacks(got, failed)
        d.addBoth(lambda _: self._later(self.monitorInterval, self._observe))

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
