# -*- test-case-name: tests.test_bus -*-
"""
The receiver's side of the bus: publish every accepted frame to Redis and
answer each frame with the RESULT a worker put on this receiver's results
stream.

L{BusPublisher} is one more consumer of the receiver's pipeline:

  - a frame of a I{finite} source (a video, an image folder) is
    acknowledged only once its XADD succeeded: the consumer returns a
    Deferred that fires then.  While Redis is down or slow the publisher
    retries on its own (backing off to C{maxRetryDelay}); no ACK goes out,
    the sender's window fills and it waits, and it resends what is not
    acknowledged after a reconnect, as it always does.  When more than
    C{maxBacklog} finite frames wait, reading from their senders'
    connections pauses until half have gone;
  - a frame of a I{live} source is acknowledged at once; at most
    C{maxLive} wait, and the oldest goes (counted as dropped) to make
    room.  Its Redis Stream is trimmed (C{XADD MAXLEN ~ liveLength}), so
    Redis's memory stays bounded for live streams; finite streams are not
    trimmed, workers delete each entry once they have acknowledged it.

L{AwaitingAnswers} remembers, within a bound, which frames wait for a
worker's answer; L{AnswerReader} reads this receiver's results stream and
replies to each such frame once; a late duplicate (two workers answered the
same frame after a claim) finds nothing to answer and is counted.

Everything here runs on the reactor thread; the Redis calls go through a
L{imageproto.features.bus.link.RedisLink}, whose threads block for them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import OrderedDict, deque

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from imageproto import wire
from imageproto.common.numbers import percentile
from imageproto.features.bus import keys
from imageproto.receiver.pipeline import ConsumerBase, IFrameConsumer

__all__ = [
    "BusConfig",
    "BusPublisher",
    "AwaitingAnswers",
    "AnswerReader",
    "BusService",
    "attachBus",
]

@frozen
class BusConfig:
    """
    Publish the receiver's frames to a Redis bus (C{--bus} and its
    companions, built by L{imageproto.tap.bus.busConfig}).
    """

    url: str
    receiverId: str
    replies: bool = True
    maxBacklog: int = 64
    maxLive: int = 16
    liveLength: int = 256
    maxAwaiting: int = 1024
    answerTimeout: float = 30.0


def defaultId() -> str:
    """
    A receiver id unique to this process: host, pid and a random part.
    """
    host = wire.toStreamName(socket.gethostname() or "receiver")
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@define(eq=False)
class _Job:
    frame: object
    queued: float
    fields: dict = field(repr=False)
    deferred: Deferred | None = None
    finite: bool = True


@define(eq=False)
class _Counts:
    published: int = 0
    dropped: int = 0


class AwaitingAnswers:
    """
    Frames waiting for a worker's answer, by C{(stream, session, seq)}, at
    most C{limit}: beyond it the oldest is forgotten (and counted), so a
    fleet that never answers costs bounded memory (each holds its JPEG).
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._frames: OrderedDict = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame, now: float = 0.0) -> None:
        key = (frame.stream, frame.session, frame.seq)
        if key in self._frames:
            return
        self._frames[key] = [frame, now, 0]
        while len(self._frames) > self.limit:
            self._frames.popitem(last=False)
            self.forgotten += 1

    def take(self, key: tuple):
        """
        The frame waiting under C{key}, no longer waiting; C{None} if none
        is (answered already, or never asked).
        """
        entry = self._frames.pop(key, None)
        return None if entry is None else entry[0]

    def overdue(self, now: float, timeout: float, attempts: int = 3) -> list:
        """
        The finite-source frames that have waited C{timeout} seconds or more;
        each starts waiting anew from C{now}.  A frame overdue C{attempts}
        times is forgotten (and counted) instead: no worker is answering.
        """
        late = []
        for key, entry in list(self._frames.items()):
            frame, since, tries = entry
            if frame.live or now - since < timeout:
                continue
            if tries >= attempts:
                del self._frames[key]
                self.forgotten += 1
                continue
            late.append(frame)
            entry[1], entry[2] = now, tries + 1
        return late

    def discard(self, frame) -> None:
        self._frames.pop((frame.stream, frame.session, frame.seq), None)


@implementer(IFrameConsumer)
class BusPublisher(ConsumerBase):
    """
    Publishes accepted frames to the bus; see the module docstring.

    @param publish: C{publish([(key, fields, maxlen), ...])} returns a
        Deferred of the entry IDs (L{RedisLink.publish}).
    @param clock: an C{IReactorTime}.
    @param awaiting: an L{AwaitingAnswers} to remember published frames in,
        or C{None} when no answers are expected.
    """

    log = Logger()

    def __init__(
        self,
        publish,
        receiverId: str,
        clock,
        awaiting: AwaitingAnswers | None = None,
        maxBacklog: int = 64,
        maxLive: int = 16,
        liveLength: int = 256,
        batch: int = 32,
        retryDelay: float = 0.05,
        maxRetryDelay: float = 1.0,
        latencySamples: int = 1000,
    ) -> None:
        self._publish = publish
        self.receiverId = receiverId
        self.clock = clock
        self.awaiting = awaiting
        self.answers = awaiting is not None
        self.maxBacklog = maxBacklog
        self.maxLive = maxLive
        self.liveLength = liveLength
        self.batch = batch
        self.retryDelay = retryDelay
        self.maxRetryDelay = maxRetryDelay
        self._finite: deque = deque()
        self._live: deque = deque()
        self._inFlight: list = []
        self._retry = None
        self._delay = retryDelay
        self._paused: dict = {}
        self._latencies: deque = deque(maxlen=latencySamples)
        self._counts: dict = {}
        self.failures = 0
        self.republished = 0
        self.up = True
        self.closed = False

    # -- IFrameConsumer ------------------------------------------------------

    def frameReceived(self, frame):
        if self.closed:
            return None
        channel = frame.channel
        annotated = bool(getattr(channel, "wantsImage", False))
        job = _Job(frame, self.clock.seconds(), keys.frameFields(frame, self.receiverId, annotated))
        if self.awaiting is not None:
            self.awaiting.add(frame, job.queued)
        if frame.live:
            job.finite = False
            self._live.append(job)
            self._trimLive()
            self._pump()
            return None
        job.deferred = Deferred()
        self._finite.append(job)
        if channel is not None and self.finiteBacklog > self.maxBacklog:
            self._pause(channel)
        self._pump()
        return job.deferred

    def republish(self, frame) -> None:
        """
        Publish C{frame} (of a finite source, acknowledged already) again:
        its answer is overdue, Redis may have lost it.  A worker may then
        answer twice; the receiver answers the sender once.
        """
        if self.closed:
            return
        self.republished += 1
        self._finite.append(
            _Job(frame, self.clock.seconds(), keys.frameFields(
                frame, self.receiverId, bool(getattr(frame.channel, "wantsImage", False))))
        )
        self._pump()

    def close(self) -> None:
        self.closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._resumeAll()

    # -- the queue -----------------------------------------------------------

    @property
    def finiteBacklog(self) -> int:
        """
        Finite-source frames not yet in Redis (waiting or being sent).
        """
        return len(self._finite) + sum(1 for j in self._inFlight if j.finite)

    def _counter(self, stream: str) -> _Counts:
        counts = self._counts.get(stream)
        if counts is None:
            counts = self._counts[stream] = _Counts()
        return counts

    def _trimLive(self) -> None:
        while len(self._live) > self.maxLive:
            stale = self._live.popleft()
            self._counter(stale.frame.stream).dropped += 1
            if self.awaiting is not None:
                self.awaiting.discard(stale.frame)
            self.log.debug(
                "bus behind: live frame {seq} of {stream} dropped",
                seq=stale.frame.seq,
                stream=stale.frame.stream,
            )

    def _pump(self) -> None:
        if self._inFlight or self._retry is not None or self.closed:
            return
        jobs = []
        while self._finite and len(jobs) < self.batch:
            jobs.append(self._finite.popleft())
        while self._live and len(jobs) < self.batch:
            jobs.append(self._live.popleft())
        if not jobs:
            return
        self._inFlight = jobs
        entries = [
            (
                keys.framesKey(job.frame.stream),
                job.fields,
                self.liveLength if job.frame.live else None,
            )
            for job in jobs
        ]
        try:
            d = self._publish(entries)
        except Exception as e:  # a synchronous failure counts as any other
            from twisted.internet.defer import fail

            d = fail(e)
        d.addCallbacks(self._published, self._failed)

    def _published(self, ids) -> None:
        jobs, self._inFlight = self._inFlight, []
        now = self.clock.seconds()
        if not self.up:
            self.log.info("bus: Redis is back; publishing again")
        self.up = True
        self._delay = self.retryDelay
        for job in jobs:
            self._latencies.append(now - job.queued)
            self._counter(job.frame.stream).published += 1
            if job.deferred is not None:
                job.deferred.callback(None)
        self._relieve()
        self._pump()

    def _failed(self, failure) -> None:
        jobs, self._inFlight = self._inFlight, []
        self.failures += 1
        if self.up:
            self.log.error(
                "bus: publishing failed ({error}); finite frames wait "
                "unacknowledged, live frames are dropped oldest first, retrying",
                error=failure.getErrorMessage(),
            )
        self.up = False
        # Back in front, in their order; live frames beyond the bound go.
        finite = [j for j in jobs if j.finite]
        live = [j for j in jobs if not j.finite]
        self._finite.extendleft(reversed(finite))
        self._live.extendleft(reversed(live))
        self._trimLive()
        if self.closed:
            return
        delay, self._delay = self._delay, min(self._delay * 2, self.maxRetryDelay)
        self._retry = self.clock.callLater(delay, self._retryNow)

    def _retryNow(self) -> None:
        self._retry = None
        self._pump()

    # -- backpressure --------------------------------------------------------

    def _pause(self, channel) -> None:
        if id(channel) not in self._paused:
            self._paused[id(channel)] = channel
            channel.pauseReading("bus")

    def _relieve(self) -> None:
        if self._paused and self.finiteBacklog <= self.maxBacklog // 2:
            self._resumeAll()

    def _resumeAll(self) -> None:
        paused, self._paused = self._paused, {}
        for channel in paused.values():
            channel.resumeReading("bus")

    @property
    def pausedChannels(self) -> int:
        return len(self._paused)

    # -- statistics ----------------------------------------------------------

    def snapshot(self) -> dict:
        """
        The publisher's part of the stats file's C{"bus"} section.
        """
        latency = {}
        for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(self._latencies, fraction)
            latency[name] = None if value is None else round(value * 1000.0, 3)
        return {
            "up": self.up,
            "published": sum(c.published for c in self._counts.values()),
            "live_dropped": sum(c.dropped for c in self._counts.values()),
            "publish_failures": self.failures,
            "republished": self.republished,
            "publish_latency_ms": latency,
            "backlog": {"finite": self.finiteBacklog, "live": len(self._live)},
            "paused_senders": len(self._paused),
            "per_stream": {
                name: {"published": c.published, "live_dropped": c.dropped}
                for name, c in sorted(self._counts.items())
            },
        }


class AnswerReader:
    """
    Routes workers' answers to the frames waiting for them.

    @param awaiting: the L{AwaitingAnswers} the publisher fills.
    """

    log = Logger()

    def __init__(self, awaiting: AwaitingAnswers) -> None:
        self.awaiting = awaiting
        self.answered = 0
        self.skipped = 0
        self.unmatched = 0
        self.malformed = 0

    def entriesReceived(self, entries) -> None:
        """
        Answer the frames C{entries} (C{[(id, fields), ...]} of the results
        stream) are about.
        """
        for entryId, fields in entries:
            try:
                answer = keys.decodeAnswer(fields)
            except ValueError as e:
                self.malformed += 1
                self.log.warn("bus: malformed results entry {id}: {error}", id=entryId, error=str(e))
                continue
            frame = self.awaiting.take(answer.key)
            if frame is None:
                # Answered already (a claimed frame done twice), or forgotten.
                self.unmatched += 1
                self.log.debug(
                    "bus: late answer to frame {seq} of {stream} from {worker} dropped",
                    seq=answer.seq,
                    stream=answer.stream,
                    worker=answer.worker,
                )
                continue
            if answer.result is None:
                self.skipped += 1
                continue
            self.answered += 1
            frame.reply(answer.result)

    def snapshot(self) -> dict:
        return {
            "answered": self.answered,
            "skipped_by_workers": self.skipped,
            "late_duplicates": self.unmatched,
            "awaiting": len(self.awaiting),
            "forgotten": self.awaiting.forgotten,
        }


class BusService(Service):
    """
    Runs the receiver's bus: the link's threads, the loop reading this
    receiver's results stream, and the monitor's poll of Redis.

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

    def stopService(self):
        super().stopService()
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
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
    if config.replies:
        receiver.advertise(wire.SCAP_DETECT)
    return service
