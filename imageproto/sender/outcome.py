# -*- test-case-name: tests.test_sender -*-
"""
What a run of the sender comes to: a L{Summary} of its counters when every
frame is settled, or L{SenderFailed} when it stops for good; and L{Counts},
the running tallies L{imageproto.sender.flow.FrameSender} keeps to build
the summary.
"""

from __future__ import annotations

from collections import deque

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imageproto.common.numbers import percentile

__all__ = ["Counts", "RunOutcome", "SenderFailed", "Summary", "RTT_SAMPLES"]

# Round-trip samples kept for the summary's percentiles (bounded memory).
RTT_SAMPLES = 10_000


class SenderFailed(Exception):
    """
    The sender stopped for good before delivering everything.

    @ivar reason: a sentence for the log and the process's output.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@frozen
class Summary:
    """
    What one run of the sender did.

    @ivar sent: distinct frames sent at least once.
    @ivar resent: extra transmissions after reconnects.
    @ivar acknowledged: frames the server ACKed.
    @ivar rejected: frames the server REJECTed.
    @ivar dropped: frames a live source captured that were never sent.
    @ivar lost: frames of a live source sent but unacknowledged when their
        connection was lost.
    @ivar reconnects: handshakes after the first.
    @ivar results: RESULT messages received.
    @ivar rttP50: median send-to-ACK time in seconds (sender's clock), or
        C{None} without ACKs.
    @ivar rttP95: the 95th percentile, likewise.
    @ivar skipped: frames of a resumed finite source that the receiver
        already held (a run after a crash goes on where the last stopped).
    @ivar notStored: frames the receiver could not store (it said the
        condition was temporary) still unstored when the sender gave up.
    @ivar unacknowledged: frames sent but neither acknowledged, rejected,
        lost nor given up when the summary was taken (a sender stopped while
        frames were in flight).
    """

    sent: int
    resent: int
    acknowledged: int
    rejected: int
    dropped: int
    lost: int
    reconnects: int
    results: int
    rttP50: float | None
    rttP95: float | None
    skipped: int = 0
    notStored: int = 0
    unacknowledged: int = 0

    def logTo(self, logger, name: str, outcome: str) -> None:
        """
        Emit this summary as one event on C{logger}.

        @param name: the stream name.
        @param outcome: the heading, such as C{"done"}.
        """
        logger.info(
            "sender {name!r} {outcome}: {sent} sent, {acknowledged} "
            "acknowledged, {rejected} rejected, {dropped} dropped, {lost} lost, "
            "{resent} resent, {reconnects} reconnects, round trip "
            "p50 {p50} s, p95 {p95} s; {skipped} skipped (already on the "
            "receiver), {notStored} not stored, {unacknowledged} unacknowledged",
            name=name,
            outcome=outcome,
            p50=_seconds(self.rttP50),
            p95=_seconds(self.rttP95),
            **{k: getattr(self, k) for k in _COUNTS},
        )


@define
class Counts:
    """
    The running tallies of one L{imageproto.sender.flow.FrameSender}: the
    counters a L{Summary} reports, the handshakes so far, and the most
    recent send-to-ACK times.
    """

    sent: int = 0
    resent: int = 0
    acknowledged: int = 0
    rejected: int = 0
    dropped: int = 0
    lost: int = 0
    results: int = 0
    skipped: int = 0
    notStored: int = 0
    handshakes: int = 0
    roundTrips: deque = field(factory=lambda: deque(maxlen=RTT_SAMPLES), repr=False)

    def summary(self, unacknowledged: int = 0) -> Summary:
        """
        The L{Summary} of these counts now.

        @param unacknowledged: frames in flight now.
        """
        return Summary(
            sent=self.sent,
            resent=self.resent,
            acknowledged=self.acknowledged,
            rejected=self.rejected,
            dropped=self.dropped,
            lost=self.lost,
            reconnects=max(0, self.handshakes - 1),
            results=self.results,
            rttP50=percentile(self.roundTrips, 0.5),
            rttP95=percentile(self.roundTrips, 0.95),
            skipped=self.skipped,
            notStored=self.notStored,
            unacknowledged=unacknowledged,
        )


_COUNTS = (
    "sent",
    "acknowledged",
    "rejected",
    "dropped",
    "lost",
    "resent",
    "reconnects",
    "skipped",
    "notStored",
    "unacknowledged",
)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class RunOutcome:
    """
    How a sender's run ends, for L{imageproto.sender.flow.FrameSender}:
    L{whenDone} waiters, L{fail}, and the logged L{Summary}.  The class
    using it provides C{log}, C{name}, C{summary()} and starts with
    C{_outcome = None} and an empty C{_doneWaiters}.
    """

    _outcome = None

    def fail(self, reason: str) -> None:
        """
        Stop for good: log C{reason} and fail L{whenDone}.
        """
        if self._outcome is not None:
            return
        self.log.error("sender {name!r} stops: {reason}", name=self.name, reason=reason)
        self._finish(SenderFailed(reason))

    def logSummary(self, outcome: str) -> Summary:
        """
        Log the L{summary} as one event, headed C{outcome} ("done").

        @return: the summary.
        """
        summary = self.summary()
        summary.logTo(self.log, self.name, outcome)
        return summary

    def whenDone(self) -> Deferred:
        """
        @return: a fresh Deferred that fires with the L{Summary} once every
            frame is settled, or fails with L{SenderFailed}.
        """
        d = Deferred()
        if self._outcome is None:
            self._doneWaiters.append(d)
        else:
            _fire(d, self._outcome)
        return d

    @property
    def finished(self) -> bool:
        return self._outcome is not None

    def _finish(self, outcome) -> None:
        self._outcome = outcome
        waiters, self._doneWaiters = self._doneWaiters, []
        for d in waiters:
            _fire(d, outcome)


def _fire(d: Deferred, outcome) -> None:
    if isinstance(outcome, Exception):
        d.errback(Failure(outcome))
    else:
        d.callback(outcome)
