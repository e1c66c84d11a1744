# -*- test-case-name: tests.test_stats -*-
"""
Per-stream statistics kept by the receiver: pure bookkeeping, fed with plain
calls and timestamps, so it is tested without sockets or real time.
"""

from __future__ import annotations

from collections import deque

from attrs import define, field

from imageproto.common.numbers import percentile

__all__ = ["StreamStats", "percentile"]


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
    @ivar lastSeen: receive time of the latest message counted, or C{None}.
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
    lastSeen: float | None = None
    _since: float | None = field(default=None, init=False)
    _arrivals: deque = field(factory=deque, init=False, repr=False)
    _latencies: deque = field(init=False, repr=False)
    _highestSeq: int | None = field(default=None, init=False)
    _sessionDropped: int = field(default=0, init=False)
    _droppedBefore: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._latencies = deque(maxlen=self.latencySamples)

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
    ) -> None:
        """
        Count a frame every sink accepted.
        """
        self.frames += 1
        self.bytes += size
        self.lastSeen = receiveTime
        if self._since is None:
            self._since = receiveTime
        self._arrivals.append(receiveTime)
        self._latencies.append(receiveTime - captureTime)
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

    def latencyPercentiles(self) -> dict:
        """
        Capture-to-receive latency over the recent samples, in milliseconds:
        C{{"p50": .., "p95": .., "p99": ..}}, each C{None} before any frame.
        Senders' and receiver's clocks differ, so this includes their offset.
        """
        ordered = sorted(self._latencies)
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
            "gaps": self.gaps,
            "dropped": self.dropped,
            "connections": self.connections,
            "reconnects": self.reconnects,
            "rejected": self.rejected,
            "storage_errors": self.storageErrors,
            "duplicates": self.duplicates,
            "connected": connected,
            "last_seen": self.lastSeen,
        }
