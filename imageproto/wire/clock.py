# -*- test-case-name: tests.test_clock -*-
"""
The clock-offset exchange as plain arithmetic (PROTOCOL.md, "Clock offset").

Between peers that both announced the clock capability (C{CAP_CLOCK} in
HELLO, C{SCAP_CLOCK} in WELCOME), a PONG carries the answering peer's
receive and send times.  The peer that sent the PING then holds four
timestamps, NTP's::

    t1  PING sent        (pinger's clock)
    t2  PING received    (answerer's clock)
    t3  PONG sent        (answerer's clock)
    t4  PONG received    (pinger's clock)

and L{clockSample} turns them into the answerer's clock offset (its clock
minus the pinger's) with an error bound of half the round trip.
L{ClockFilter} keeps the sample with the smallest bound among recent ones,
as NTP's clock filter does.  No Twisted and no real time here: every time is
an argument, so the Twisted receiver (L{imageproto.protocol.clock}) and a
blocking client can share it.
"""

from __future__ import annotations

import math
from collections import deque

from attrs import define, field, frozen

from imageproto.wire.messages import CAP_CLOCK, SCAP_CLOCK, Ping, Pong

__all__ = [
    "CLOCK_WINDOW",
    "MAX_DRIFT",
    "ClockEstimate",
    "ClockFilter",
    "ClockSample",
    "answerPing",
    "clockAgreed",
    "clockSample",
]

# How many recent samples the filter chooses from (NTP's clock filter keeps 8).
CLOCK_WINDOW = 8
# The drift assumed between two free-running clocks, seconds per second: a
# sample's error bound grows by this much per second of its age (NTP's PHI,
# 15 ppm; a Raspberry Pi's crystal is typically within it).
MAX_DRIFT = 15e-6


def clockAgreed(helloCapabilities: int, welcomeCapabilities: int) -> bool:
    """
    Whether a connection carries timed PONGs: the sender announced
    C{CAP_CLOCK} and the receiver answered with C{SCAP_CLOCK}.
    """
    return bool(helloCapabilities & CAP_CLOCK and welcomeCapabilities & SCAP_CLOCK)


def answerPing(ping: Ping, timed: bool, receivedAt: float, sentAt: float) -> Pong:
    """
    The PONG that answers C{ping}.

    @param timed: whether the connection agreed on the clock exchange
        (L{clockAgreed}); without it the PONG is the plain 10-byte one.
    @param receivedAt: when C{ping} arrived (t2), on this peer's clock.
    @param sentAt: when the PONG goes out (t3), on the same clock.
    """
    if not timed:
        return Pong(ping.token)
    return Pong(ping.token, receivedAt, sentAt)


@frozen
class ClockSample:
    """
    One exchange's view of the peer's clock.

    @ivar offset: the peer's clock minus ours, seconds: a time C{t} on the
        peer's clock is C{t - offset} on ours.
    @ivar roundTrip: the exchange's network round trip, seconds (the time
        the peer held the PING excluded).
    @ivar at: when the exchange ended (t4), on our clock.
    """

    offset: float
    roundTrip: float
    at: float

    @property
    def error(self) -> float:
        """
        The bound on C{offset}'s error when it was measured: half the round
        trip (the true offset is within it however the delay split between
        the two directions).
        """
        return self.roundTrip / 2.0


def clockSample(t1: float, t2: float, t3: float, t4: float) -> ClockSample:
    """
    NTP's on-wire arithmetic: offset C{((t2 - t1) + (t3 - t4)) / 2}, round
    trip C{(t4 - t1) - (t3 - t2)}.

    @param t1: PING sent, our clock.
    @param t2: PING received, the peer's clock.
    @param t3: PONG sent, the peer's clock.
    @param t4: PONG received, our clock.
    @raise ValueError: if a time is not finite, or either clock ran
        backwards within the exchange (a clock was stepped: the sample
        means nothing).
    """
    if not all(math.isfinite(t) for t in (t1, t2, t3, t4)):
        raise ValueError("clock exchange times must be finite")
    if t4 < t1 or t3 < t2:
        raise ValueError("a clock ran backwards during the exchange")
    # The peer's clock may run a little fast against ours, making its hold
    # time longer than the whole round trip; the delay is then ~0, not less.
    roundTrip = max(0.0, (t4 - t1) - (t3 - t2))
    offset = ((t2 - t1) + (t3 - t4)) / 2.0
    return ClockSample(offset, roundTrip, t4)


@frozen
class ClockEstimate:
    """
    The filter's current answer.

    @ivar offset: the peer's clock minus ours, seconds.
    @ivar error: the bound on C{offset}'s error now, seconds: the chosen
        sample's half round trip plus L{MAX_DRIFT} times its age.
    @ivar roundTrip: the chosen sample's round trip, seconds.
    @ivar samples: how many samples the choice was made from.
    """

    offset: float
    error: float
    roundTrip: float
    samples: int


@define
class ClockFilter:
    """
    The last L{window} samples of one peer's clock, and the best of them.

    A sample whose messages queued behind a frame has a long round trip
    and, since queueing is rarely symmetric, a skewed offset; its bound says
    so.  The best sample is the one with the smallest bound now: half its
    round trip plus L{drift} times its age, so a fresh sample replaces an
    old one of the same quality.

    @ivar window: samples kept.
    @ivar drift: assumed relative drift of the two clocks (s/s).
    """

    window: int = CLOCK_WINDOW
    drift: float = MAX_DRIFT
    _samples: deque = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._samples = deque(maxlen=self.window)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, sample: ClockSample) -> None:
        self._samples.append(sample)

    def best(self, now: float) -> ClockEstimate | None:
        """
        The estimate at time C{now} (our clock), or C{None} before any
        sample.
        """
        if not self._samples:
            return None
        drift = self.drift

        def bound(s: ClockSample) -> float:
            return s.error + drift * max(0.0, now - s.at)

        chosen = min(self._samples, key=bound)
        return ClockEstimate(
            chosen.offset, bound(chosen), chosen.roundTrip, len(self._samples)
        )
