# -*- test-case-name: tests.test_clock -*-
"""
Timing the receiver's PINGs, so that a sender's clock offset can be
estimated (PROTOCOL.md, "Clock offset"), and a clock that is deliberately
wrong, for testing that estimate.

L{ClockProbe} remembers when each PING went out (t1), takes the time each
timed PONG arrives (t4), and hands L{imageproto.wire.clockSample}'s result
to a callback.  Right after WELCOME it PINGs a few times in quick succession,
so that an estimate exists within a second; after that the heartbeat's PINGs
(or, without a heartbeat, its own every L{CLOCK_INTERVAL} seconds) keep the
estimate fresh.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from attrs import define, field
from twisted.internet.task import LoopingCall

from imageproto import wire

__all__ = [
    "BURST",
    "BURST_INTERVAL",
    "CLOCK_INTERVAL",
    "ClockProbe",
    "SkewedClock",
]

# The PINGs sent right after WELCOME, and the seconds between them: an
# estimate within a second, chosen from several round trips.
BURST = 5
BURST_INTERVAL = 0.15
# Seconds between PINGs when no heartbeat sends them anyway.
CLOCK_INTERVAL = 2.0
# PINGs remembered while their PONGs are awaited; older ones are forgotten
# (a PONG that late would only be a poor sample).
_OUTSTANDING = 16


@define(eq=False)
class ClockProbe:
    """
    Times one connection's PINGs and turns the timed PONGs into samples.

    @ivar clock: an C{IReactorTime}: C{seconds()} stamps t1 and t4 (it must
        be the clock the receiver stamps frames with) and C{callLater}
        schedules the PINGs.
    @ivar ping: called with no arguments to send a PING now; the protocol
        then calls L{pinged} with its token.
    @ivar sampled: called with each L{wire.ClockSample}.
    @ivar interval: seconds between PINGs of our own after the burst, or
        C{None} when a heartbeat already sends them.
    """

    clock: object
    ping: Callable[[], object]
    sampled: Callable[[wire.ClockSample], object]
    interval: float | None = None
    burst: int = BURST
    burstInterval: float = BURST_INTERVAL
    _sent: OrderedDict = field(factory=OrderedDict, init=False, repr=False)
    _calls: list = field(factory=list, init=False, repr=False)
    _loop: object = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """
        PING now, L{burst} times in all L{burstInterval} apart, then every
        L{interval} seconds if it is set.
        """
        for i in range(1, self.burst):
            self._calls.append(self.clock.callLater(i * self.burstInterval, self.ping))
        if self.interval:
            self._loop = LoopingCall(self.ping)
            self._loop.clock = self.clock
            self._calls.append(
                self.clock.callLater(
                    self.burst * self.burstInterval, self._loop.start, self.interval
                )
            )
        if self.burst:
            self.ping()

    def stop(self) -> None:
        """
        Cancel every PING not yet sent (the connection is gone).
        """
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._sent.clear()

    def pinged(self, token: int) -> None:
        """
        A PING with C{token} is being sent now (t1).
        """
        self._sent[token] = self.clock.seconds()
        while len(self._sent) > _OUTSTANDING:
            self._sent.popitem(last=False)

    def ponged(self, pong: wire.Pong) -> wire.ClockSample | None:
        """
        A PONG arrived now (t4): if it answers a PING of ours and carries
        times, make a sample of it and hand it on.

        @return: the sample, or C{None} for a PONG that gave none.
        """
        t1 = self._sent.pop(pong.token, None)
        if t1 is None or pong.receiveTime is None:
            return None
        try:
            sample = wire.clockSample(
                t1, pong.receiveTime, pong.sendTime, self.clock.seconds()
            )
        except ValueError:
            return None
        self.sampled(sample)
        return sample


@define
class SkewedClock:
    """
    An C{IReactorTime} that reads C{skew} seconds off C{inner}: what a
    machine whose clock is wrong stamps.  Only C{seconds()} is shifted;
    C{callLater} and C{getDelayedCalls} go to C{inner} unchanged, delays
    being durations.  (So the C{DelayedCall}s it returns report times on
    C{inner}'s clock: give it only to code that stamps times, not to code
    comparing a call's C{getTime()} with C{seconds()}.)

    A testing aid: the sender's tap wraps its reactor in one when
    C{IMAGEPROTO_CLOCK_SKEW} is set.
    """

    inner: object
    skew: float = 0.0

    def seconds(self) -> float:
        return self.inner.seconds() + self.skew

    def callLater(self, delay, f, *args, **kwargs):
        return self.inner.callLater(delay, f, *args, **kwargs)

    def getDelayedCalls(self):
        return self.inner.getDelayedCalls()
