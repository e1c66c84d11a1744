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
  - Before its handshake finishes (WELCOME) a peer may announce messages
    of at most L{HANDSHAKE_MAX_BYTES} (HELLO, AUTH, PING, BYE, ERROR are
    far smaller); a larger length gets ERROR 5 and a warning at once, so an
    unauthenticated peer makes the server hold at most that much (plus one
    read, 256 KiB) whatever C{--max-frame-bytes} is.
  - C{--max-buffered-bytes 256 MiB}: bytes of partly received messages
    held across all welcomed connections (a L{BufferBudget}).  A connection
    whose next message is incomplete reserves that message's announced size
    before it reads on; when the reservation does not fit, reading from that
    connection pauses and it queues, first come first served, until
    completed messages free enough.  One message always fits (the cap is
    raised to C{--max-frame-bytes} if lower), so some peer always makes
    progress; the queue is FIFO, so a stream of small messages cannot keep
    a large one waiting for ever; and a reservation lasts only until the
    message is complete or its connection closes (a silent peer holding one
    is dropped by the idle timeout).  Memory held in partial messages is
    then at most the cap plus one read per connection that is paused mid-read
    (256 KiB; 1 MiB for a welcomed plain TCP sender, whose reads go into one
    shared buffer and are copied only when reading pauses).
"""

from __future__ import annotations

from typing import Callable

from attrs import define, field
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from zope.interface import implementer

__all__ = [
    "ABORT_GRACE",
    "BufferBudget",
    "DEFAULT_MAX_BUFFERED_BYTES",
    "HANDSHAKE_MAX_BYTES",
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
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
# The largest message a peer may announce before WELCOME: a HELLO is at most
# about 300 bytes (a 255-byte name), an AUTH 50, an ERROR or BYE a reason.
HANDSHAKE_MAX_BYTES = 4096

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


@define(eq=False)
class BufferBudget:
    """
    Bytes of partly received messages the server holds across all
    connections, against a cap; connections that cannot reserve wait in
    order of arrival.

    A holder is any object with a C{budgetGranted(size)} method, called
    (once) when a queued request is granted.

    @ivar cap: the most bytes reserved at once (except that one request is
        always granted when nothing is reserved).
    @ivar used: bytes reserved now.
    @ivar peak: the most bytes ever reserved.
    """

    cap: int
    used: int = 0
    peak: int = 0
    _waiting: list = field(factory=list)

    @property
    def waiting(self) -> int:
        """
        How many holders wait for a grant.
        """
        return len(self._waiting)

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.cap

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    def request(self, holder, size: int) -> bool:
        """
        Reserve C{size} bytes for C{holder}.

        @return: C{True} if reserved now; C{False} if C{holder} was queued,
            to be told through C{budgetGranted(size)}.
        """
        if not self._waiting and self._fits(size):
            self._take(size)
            return True
        self._waiting.append((holder, size))
        return False

    def release(self, size: int) -> None:
        """
        Give back C{size} reserved bytes, and grant queued requests that now
        fit, oldest first.
        """
        self.used = max(0, self.used - size)
        while self._waiting and self._fits(self._waiting[0][1]):
            holder, granted = self._waiting.pop(0)
            self._take(granted)
            holder.budgetGranted(granted)

    def cancel(self, holder) -> None:
        """
        Forget C{holder}'s queued request (its connection closed).
        """
        before = len(self._waiting)
        self._waiting = [(h, n) for (h, n) in self._waiting if h is not holder]
        if len(self._waiting) != before:
            self.release(0)


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

    def pingNow(self) -> None:
        """
        Send one PING now, outside the heartbeat's schedule, with the next
        token (so that tokens never repeat on a connection).
        """
        self._ping()

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
