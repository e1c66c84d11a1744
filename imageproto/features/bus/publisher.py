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

Answers are matched to frames in L{imageproto.features.bus.answers}; the
service that runs both, and L{attachBus}, are in
L{imageproto.features.bus.service}.

Everything here runs on the reactor thread; the Redis calls go through a
L{imageproto.features.bus.link.RedisLink}, whose threads block for them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import deque

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from imageproto import wire
from imageproto.common.numbers import percentile
from imageproto.features.bus import keys
from imageproto.features.bus.answers import AwaitingAnswers
from imageproto.receiver.pipeline import ConsumerBase, IFrameConsumer

__all__ = ["BusConfig", "BusPublisher", "defaultId"]

@frozen
class BusConfig:
    """
    Publish the receiver's frames to a Redis bus (C{--bus} and its
    companions, built by L{imageproto.tap.bus.busConfig}).

    @ivar url: the Redis server (the first, when there are several).
    @ivar shards: the further servers of a C{--bus} naming several, in
        order (see L{imageproto.features.bus.shards}).
    """

    url: str
    receiverId: str
    replies: bool = True
    maxBacklog: int = 64
    maxLive: int = 16
    liveLength: int = 256
    maxAwaiting: int = 1024
    answerTimeout: float = 30.0
    shards: tuple = ()

    @property
    def urls(self) -> tuple:
        """
        Every Redis server of the bus, in the order streams are spread on.
        """
        return (self.url,) + tuple(self.shards)


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
