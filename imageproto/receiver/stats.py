# -*- test-case-name: tests.test_stats -*-
"""
Per-stream statistics kept by the receiver: pure bookkeeping, fed with plain
calls and timestamps, so it is tested without sockets or real time.
"""

from __future__ import annotations

import math
from collections import deque

from attrs import define, field

from imageproto.common.files import jsonSafe, strictJSON
from imageproto.common.numbers import percentile
from imageproto.wire import ClockFilter, ClockSample

__all__ = [
    "PLAUSIBLE_SKEW",
    "StreamStats",
    "jsonSafe",
    "percentile",
    "plausibleTime",
    "strictJSON",
]

# How far a sender's capture or send time may be from the receiver's clock
# and still count in the latency figures: one day, far more than any real
# clock offset or queueing, yet small enough that a latency in milliseconds
# stays a modest finite number (1e308 once made the JSON say Infinity).
PLAUSIBLE_SKEW = 86400.0


def plausibleTime(t: float, now: float, skew: float = PLAUSIBLE_SKEW) -> bool:
    """
    Whether C{t}, a time on a sender's clock, is finite and within C{skew}
    seconds of C{now} on the receiver's.
    """
    return math.isfinite(t) and abs(t - now) <= skew


@define
class StreamStats:
    """
    Counters and recent history for one named stream.

    All times are seconds since the epoch; receive times come from the
    receiver's clock, capture times from the sender's.

    @ivar window: seconds of receive timestamps behind L{fps}.
    @ivar latencySamples: how many recent latencies the percentiles use.
    @ivar frames: frames accepted (duplicates and rejected ones excluded).
    @ivar bytes: JPEG bytes in those frames.
    @ivar gaps: sequence numbers skipped within a sender session and not
        filled in later.
    @ivar dropped: frames the sender reports dropping, summed over its
        sessions (the FRAME trailer carries a per-session running count).
    @ivar connections: accepted HELLOs.
    @ivar reconnects: accepted HELLOs after the first under this name (a
        sender coming back, or a newer connection replacing a live one).
    @ivar rejected: frames refused: not JPEGs, or not stored.
    @ivar storageErrors: frames refused because they could not be stored (a
        full disk), counted in L{rejected} too.
    @ivar duplicates: resent frames that were already accepted.
    @ivar implausibleTimes: accepted frames whose capture or send time was
        not finite or further than L{PLAUSIBLE_SKEW} from the receiver's
        clock; they count everywhere but in the latency figures.
    @ivar lastSeen: receive time of the latest message counted, or C{None}.
    @ivar clockFilter: the current connection's samples of the sender's clock
        offset (PROTOCOL.md, "Clock offset"); empty for a sender without
        the clock capability, and emptied on each new connection.
    """

    window: float = 5.0
    latencySamples: int = 1000
    frames: int = 0
    bytes: int = 0
    gaps: int = 0
    connections: int = 0
    reconnects: int = 0
    rejected: int = 0
    storageErrors: int = 0
    duplicates: int = 0
    implausibleTimes: int = 0
    lastSeen: float | None = None
    _since: float | None = field(default=None, init=False)
    _arrivals: deque = field(factory=deque, init=False, repr=False)
    _latencies: deque = field(init=False, repr=False)
    _corrected: deque = field(init=False, repr=False)
    clockFilter: ClockFilter = field(factory=ClockFilter, init=False, repr=False)
    # The best estimate's offset as of the latest sample, applied to each
    # frame's capture time; None before a sample.
    _offset: float | None = field(default=None, init=False)
    _highestSeq: int | None = field(default=None, init=False)
    _sessionDropped: int = field(default=0, init=False)
    _droppedBefore: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._latencies = deque(maxlen=self.latencySamples)
        self._corrected = deque(maxlen=self.latencySamples)

    @property
    def dropped(self) -> int:
        return self._droppedBefore + self._sessionDropped

    def connected(self, now: float, newSession: bool) -> None:
        """
        A sender said HELLO under this name.

        @param newSession: C{True} when its session differs from the previous
            connection's: sequence numbers and the dropped count start again.
        """
        if self.connections:
            self.reconnects += 1
        self.connections += 1
        if self._since is None:
            self._since = now
        self.lastSeen = now
        # Another connection may be another path, or (a new session) another
        # machine: its clock is measured afresh.
        self.clockFilter = ClockFilter()
        self._offset = None
        if newSession:
            self._highestSeq = None
            self._droppedBefore += self._sessionDropped
            self._sessionDropped = 0

    def frameAccepted(
        self,
        seq: int,
        size: int,
        captureTime: float,
        receiveTime: float,
        senderDropped: int,
        sendTime: float | None = None,
    ) -> None:
        """
        Count a frame every sink accepted.

        @param sendTime: the sender's send time, checked like C{captureTime}
            when given.
        """
        self.frames += 1
        self.bytes += size
        self.lastSeen = receiveTime
        if self._since is None:
            self._since = receiveTime
        self._arrivals.append(receiveTime)
        if plausibleTime(captureTime, receiveTime) and (
            sendTime is None or plausibleTime(sendTime, receiveTime)
        ):
            self._latencies.append(receiveTime - captureTime)
        else:
            self.implausibleTimes += 1
        offset = self._offset
        if offset is not None:
            # The capture time on our clock; checked again, as a clock more
            # than a day off may still be measured right.
            captured = captureTime - offset
            if plausibleTime(captured, receiveTime):
                self._corrected.append(receiveTime - captured)
        highest = self._highestSeq
        if highest is None:
            self._highestSeq = seq
        elif seq > highest:
            self.gaps += seq - highest - 1
            self._highestSeq = seq
        elif self.gaps:
            # A late (resent) frame fills a hole counted earlier.
            self.gaps -= 1
        self._sessionDropped = max(self._sessionDropped, senderDropped)
        self._expire(receiveTime)

    def clockSampled(self, sample: ClockSample) -> None:
        """
        The clock exchange measured the sender's clock: keep the sample, and
        correct the following frames' latencies by the best estimate.
        """
        self.clockFilter.add(sample)
        self._offset = self.clockFilter.best(sample.at).offset

    def clockEstimate(self, now: float) -> dict:
        """
        The sender's clock offset (its clock minus ours) and the bound on
        that estimate's error now, in milliseconds: C{{"clock_offset_ms":
        .., "clock_error_ms": ..}}, both C{None} before any sample.
        """
        best = self.clockFilter.best(now)
        if best is None:
            return {"clock_offset_ms": None, "clock_error_ms": None}
        return {
            "clock_offset_ms": round(best.offset * 1000.0, 3),
            "clock_error_ms": round(best.error * 1000.0, 3),
        }

    def frameRejected(self, now: float) -> None:
        self.rejected += 1
        self.lastSeen = now

    def storageFailed(self, now: float) -> None:
        self.storageErrors += 1
        self.frameRejected(now)

    def duplicateReceived(self, now: float) -> None:
        self.duplicates += 1
        self.lastSeen = now

    def _expire(self, now: float) -> None:
        arrivals = self._arrivals
        horizon = now - self.window
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()

    def fps(self, now: float) -> float:
        """
        Frames per second over the last L{window} seconds (or since the
        stream first appeared, when that is more recent).
        """
        self._expire(now)
        if self._since is None:
            return 0.0
        span = min(self.window, now - self._since)
        if span <= 0:
            return 0.0
        return len(self._arrivals) / span

    def latencyPercentiles(self, corrected: bool = False) -> dict:
        """
        Capture-to-receive latency over the recent samples, in milliseconds:
        C{{"p50": .., "p95": .., "p99": ..}}, each C{None} before any frame.
        Senders' and receiver's clocks differ, so this includes their offset.

        @param corrected: instead, the latency with each capture time moved
            to our clock by the clock offset estimated when the frame
            arrived (frames before the first estimate are left out).
        """
        ordered = sorted(self._corrected if corrected else self._latencies)
        result = {}
        for key, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(ordered, fraction)
            result[key] = None if value is None else round(value * 1000.0, 3)
        return result

    def snapshot(self, now: float, connected: bool) -> dict:
        """
        A JSON-ready summary, the value kept under a stream's name in
        L{imageproto.receiver.registry.StreamRegistry.snapshot}.
        """
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "fps": round(self.fps(now), 3),
            "latency_ms": self.latencyPercentiles(),
            "latency_corrected_ms": self.latencyPercentiles(corrected=True),
            **self.clockEstimate(now),
            "gaps": self.gaps,
            "dropped": self.dropped,
            "connections": self.connections,
            "reconnects": self.reconnects,
            "rejected": self.rejected,
            "storage_errors": self.storageErrors,
            "duplicates": self.duplicates,
            "implausible_times": self.implausibleTimes,
            "connected": connected,
            "last_seen": self.lastSeen,
        }
