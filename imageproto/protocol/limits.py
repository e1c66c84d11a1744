# -*- test-case-name: tests.test_limits -*-
"""
The receiver's per-peer and per-server limits, as small pieces of pure logic
the protocols consult.

Defaults (each a command-line option of C{twistd imageproto}):

  - C{--max-connections 256}: connections over this get ERROR 10 (busy)
    before their HELLO is read.
  - C{--handshake-timeout 10}: seconds from connect to WELCOME (a HELLO,
    and an AUTH when tokens are required); then ERROR 7.
  - C{--heartbeat 2}: seconds between the server's PINGs (announced in
    WELCOME; the sender answers PONG, and drops a server it has not heard
    from in three heartbeats).
  - C{--idle-timeout 6}: seconds without a byte from a welcomed sender
    (frames, PONGs) before ERROR 7 and disconnect.  With heartbeats on, a
    sender that lost power or a pulled cable is noticed within this time.
  - C{--max-peer-buffer 64 MiB}: bytes of one peer's frames the server holds
    before they are stored (and answered).  Over the cap the server stops
    reading from that peer (TCP flow control then stalls the sender, whose
    own rules drop live frames or make a file source wait) and resumes once
    the backlog is under the cap again.  The server's own send buffer to the
    peer (ACKs, RESULTs) counts too: while the transport says it is full the
    server also stops reading, so a peer that does not read its answers
    cannot make the server queue them without bound.  Pausing rather than
    dropping keeps every frame of a healthy but slow stream; a dead peer is
    dropped by the idle timeout instead (which is suspended while the server
    itself is the one not reading).
"""

from __future__ import annotations

from typing import Callable

from attrs import define, field
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from zope.interface import implementer

__all__ = [
    "ABORT_GRACE",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_PEER_BUFFER",
    "PeerBuffer",
    "ReadGate",
    "Watchdog",
    "WritePressure",
    "senderIdleTimeout",
]

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_HEARTBEAT = 2
DEFAULT_IDLE_TIMEOUT = 6.0
DEFAULT_MAX_PEER_BUFFER = 64 * 1024 * 1024

# After an ERROR, how long a peer gets to read it before the connection is
# aborted: a half-open peer never reads, and loseConnection would wait for
# TCP's own retransmission timeout (many minutes) to give up on it.
ABORT_GRACE = 2.0


def senderIdleTimeout(configured: float | None, heartbeat: float) -> float | None:
    """
    How long a sender waits without hearing from the server before it drops
    the connection and reconnects.

    @param configured: the sender's C{--idle-timeout}: C{None} for "three
        heartbeats", 0 for never.
    @param heartbeat: the PING interval in effect (the server's, from
        WELCOME, or the sender's own).
    @return: seconds, or C{None} for no timeout.
    """
    if configured is None:
        return 3.0 * heartbeat if heartbeat > 0 else None
    return configured if configured > 0 else None


@define
class ReadGate:
    """
    Reading from one peer is paused while any reason holds.

    @ivar pause: called when the first reason appears.
    @ivar resume: called when the last reason goes away.
    """

    pause: Callable[[], object]
    resume: Callable[[], object]
    reasons: set = field(factory=set)

    @property
    def closed(self) -> bool:
        return bool(self.reasons)

    def hold(self, reason: str) -> bool:
        """
        Add C{reason}; return C{True} if this paused reading.
        """
        first = not self.reasons
        self.reasons.add(reason)
        if first:
            self.pause()
        return first

    def release(self, reason: str) -> bool:
        """
        Remove C{reason}; return C{True} if this resumed reading.
        """
        if reason not in self.reasons:
            return False
        self.reasons.discard(reason)
        if not self.reasons:
            self.resume()
            return True
        return False


@define
class PeerBuffer:
    """
    Bytes of one peer's frames accepted but not yet settled (stored,
    answered), against a cap.

    @ivar cap: the most bytes held before reading pauses.
    @ivar pending: bytes held now.
    @ivar peak: the most bytes ever held.
    """

    cap: int
    pending: int = 0
    peak: int = 0

    @property
    def over(self) -> bool:
        return self.pending > self.cap

    def add(self, size: int) -> None:
        self.pending += size
        self.peak = max(self.peak, self.pending)

    def remove(self, size: int) -> None:
        self.pending = max(0, self.pending - size)


@implementer(IPushProducer)
@define
class WritePressure:
    """
    Registered with a server transport so that a full send buffer (a peer
    not reading its ACKs and RESULTs) holds a L{ReadGate}.
    """

    gate: ReadGate

    def pauseProducing(self) -> None:
        self.gate.hold("send buffer full")

    def resumeProducing(self) -> None:
        self.gate.release("send buffer full")

    def stopProducing(self) -> None:
        pass


@define(eq=False)
class Watchdog:
    """
    One connection's timers: a deadline for hearing from the peer, and an
    optional PING loop that gives a healthy peer something to answer.

    Any byte from the peer (L{activity}) pushes the deadline back; when it
    passes, C{onTimeout} is called once.

    @ivar clock: an C{IReactorTime}.
    @ivar onTimeout: called with the number of seconds waited.
    @ivar sendPing: called with a fresh token every heartbeat.
    """

    clock: object
    onTimeout: Callable[[float], object]
    sendPing: Callable[[int], object]
    timeout: float | None = None
    suspended: bool = False
    absolute: bool = False
    _deadline: object = None
    _pinger: object = None
    _token: int = 0

    def expect(self, timeout: float | None, absolute: bool = False) -> None:
        """
        Hear from the peer within C{timeout} seconds from now (C{None}: no
        deadline).

        @param absolute: if C{True}, activity does not push the deadline back
            (a handshake must I{finish} in time, so a peer dribbling one byte
            a second cannot hold a connection open).
        """
        self.timeout = timeout
        self.absolute = absolute
        self._cancelDeadline()
        if timeout is not None and not self.suspended:
            self._deadline = self.clock.callLater(timeout, self._expired)

    def activity(self) -> None:
        """
        The peer sent something.
        """
        if self._deadline is not None and not self.absolute:
            self._deadline.reset(self.timeout)

    def suspend(self) -> None:
        """
        Stop the deadline while this end is the one not reading.
        """
        self.suspended = True
        self._cancelDeadline()

    def unsuspend(self) -> None:
        """
        Restart the deadline (from now) after L{suspend}.
        """
        if self.suspended:
            self.suspended = False
            self.expect(self.timeout, self.absolute)

    def heartbeat(self, interval: float) -> None:
        """
        Call C{sendPing} every C{interval} seconds until L{stop}.
        """
        self._stopPinger()
        if interval > 0:
            self._pinger = LoopingCall(self._ping)
            self._pinger.clock = self.clock
            self._pinger.start(interval, now=False)

    def stop(self) -> None:
        """
        Cancel every timer (the connection is gone).
        """
        self._cancelDeadline()
        self._stopPinger()

    def _ping(self) -> None:
        self._token += 1
        self.sendPing(self._token)

    def _expired(self) -> None:
        self._deadline = None
        self._stopPinger()
        self.onTimeout(self.timeout)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _stopPinger(self) -> None:
        if self._pinger is not None:
            if self._pinger.running:
                self._pinger.stop()
            self._pinger = None
