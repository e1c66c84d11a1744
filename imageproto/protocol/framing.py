# -*- test-case-name: tests.test_protocol -*-
"""
The framing every imageproto protocol shares: L{MessageProtocol}, an
C{Int32StringReceiver} that turns length-prefixed strings into
L{imageproto.wire} messages, with linear-time buffering, a watchdog for
handshake and idle deadlines, and one way to fail (ERROR, then close).

The receiving protocol is in L{imageproto.protocol.receiving}, the sending
one in L{imageproto.protocol.sending}.
"""

from __future__ import annotations

import struct

from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from imageproto import wire
from imageproto.common.reactor import defaultReactor
from imageproto.protocol.limits import ABORT_GRACE, Watchdog

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "READ_BYTES",
    "MessageProtocol",
    "describePeer",
]

DEFAULT_MAX_MESSAGE_BYTES = wire.DEFAULT_MAX_MESSAGE_BYTES

# How much a receiving transport reads at once (a streaming plain TCP
# sender is read a MiB at a time: imageproto.protocol.direct.readInto).
READ_BYTES = 256 * 1024


def describePeer(transport) -> str:
    """
    A short, log-friendly name for the far end of C{transport}.
    """
    try:
        peer = transport.getPeer()
    except Exception:
        return "<unknown peer>"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"{host}:{port}"


class MessageProtocol(Int32StringReceiver):
    """
    Length-prefixed L{wire} messages, received in time linear in their size.

    C{IntNStringReceiver.dataReceived} joins its whole unprocessed buffer to
    every read, which is quadratic for a megabyte frame arriving in 64 KiB
    reads.  This class keeps a C{bytearray} instead: appending is amortised
    constant time per byte, and deleting a consumed prefix only moves its
    start.

    @ivar MAX_LENGTH: the largest message accepted; set it per instance from
        the factory (the class default, 16 MiB, is not Twisted's 99,999).
    """

    MAX_LENGTH = DEFAULT_MAX_MESSAGE_BYTES
    log = Logger()

    _buffer: bytearray
    _closing = False
    _lost = False
    # Bytes reserved for the incomplete message at the head of the buffer
    # (see incompleteMessage).
    _reserved = 0
    # Whether the handshake has finished; the subclasses keep it current.
    welcomed = False
    # The first bytes of a message announced over MAX_LENGTH.
    oversizedHead = b""
    # Whether both peers announced the clock capability (CAP_CLOCK,
    # SCAP_CLOCK): PONGs then carry this end's times.  Set at WELCOME.
    clockAgreed = False

    @property
    def peer(self) -> str:
        return describePeer(self.transport)

    def makeConnection(self, transport) -> None:
        self._buffer = bytearray()
        self._closing = False
        self.clock = defaultReactor(self.factory.clock)
        # The clock times are stamped with (frames, PONGs): the reactor,
        # unless the factory has a C{wallClock} (a sender's skewed clock).
        self.wallClock = getattr(self.factory, "wallClock", None) or self.clock
        self.watchdog = Watchdog(self.clock, self.timedOut, self._ping)
        # Both directions carry small messages (ACK, PONG, a RESULT without
        # a JPEG) that Nagle's algorithm would hold back until the previous
        # segment is acknowledged, and the peer delays that acknowledgement.
        setNoDelay = getattr(transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except OSError:
                pass  # not TCP (a UNIX socket)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        # Messages that lie wholly inside one read are decoded straight out
        # of it, through a memoryview: the decoder's copy of the JPEG is the
        # only one.  Only a message split across reads is gathered in
        # _buffer, and only its own bytes: once it is complete, the rest of
        # the read is parsed in place again.  (Appending every read to the
        # buffer and slicing each message out of it copied a 180 KB frame
        # three times; see bench/README.md, "Receive path".)
        self.watchdog.activity()
        view = memoryview(data)
        buf = self._buffer
        prefix = self.prefixLength
        while buf and not self.paused and not self._closing:
            have = len(buf)
            if have < prefix:
                want = prefix
            else:
                want = prefix + struct.unpack_from(self.structFormat, buf)[0]
            if have < want and want - prefix <= self.MAX_LENGTH:
                # Only what the message at the head still lacks.
                buf += view[: want - have]
                view = view[want - have :]
                if len(buf) < want:
                    if want > prefix and want > self._reserved:
                        self.incompleteMessage(want)
                    return
                if want == prefix:
                    continue
            with memoryview(buf) as held:
                consumed = self._parse(held)
            del buf[:consumed]
            if self._closing:
                return
        if self.paused or self._closing:
            if len(view) and not self._closing:
                buf += view
            return
        consumed = self._parse(view)
        if consumed < len(view) and not self._closing:
            self._buffer += view[consumed:]

    def _parse(self, view: memoryview) -> int:
        """
        Deliver each complete message at the start of C{view} (until paused
        or closing), announcing an incomplete one at its end.

        @return: how many bytes of C{view} were consumed.
        """
        prefix = self.prefixLength
        fmt = self.structFormat
        size = len(view)
        start = 0
        while not self.paused and not self._closing:
            if size - start < prefix:
                break
            (length,) = struct.unpack_from(fmt, view, start)
            if length > self.MAX_LENGTH:
                # What came instead of a message, for lengthLimitExceeded to
                # explain (an HTTP answer, a TLS record).
                self.oversizedHead = bytes(view[start : start + 64])
                self.lengthLimitExceeded(length)
                break
            end = start + prefix + length
            if end > size:
                if prefix + length > self._reserved:
                    self.incompleteMessage(prefix + length)
                break
            if self._reserved:
                self.messageCompleted()
            packet = view[start + prefix : end]
            start = end
            try:
                self.stringReceived(packet)
            finally:
                # A view of the read or of _buffer: let go of it so that the
                # buffer may be resized.
                packet.release()
        return start

    def incompleteMessage(self, size: int) -> None:
        """
        The buffer holds the start of a C{size}-byte message (prefix
        included) and no reservation covers it: a hook for a buffer budget
        (L{imageproto.protocol.limits.BufferBudget}), which sets
        C{_reserved} when it grants the bytes.  By default, nothing.
        """

    def messageCompleted(self) -> None:
        """
        The message C{_reserved} was for is complete: give the bytes back.
        """
        self._reserved = 0

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.error(
            "{peer} announced a {length}-byte message, over the limit of "
            "{limit} bytes; disconnecting",
            peer=self.peer,
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.fail(
            wire.ERR_TOO_LARGE,
            f"message of {length} bytes exceeds the limit of {self.MAX_LENGTH}",
        )

    def stringReceived(self, data: bytes) -> None:
        try:
            message = wire.decodeMessage(data)
        except wire.VersionError as e:
            self.log.warn(
                "{peer} speaks protocol version {version}: {error}; disconnecting",
                peer=self.peer,
                version=e.version,
                error=str(e),
            )
            self.fail(wire.ERR_VERSION, str(e))
            return
        except wire.WireError as e:
            self.log.warn(
                "malformed message from {peer}: {error}; disconnecting",
                peer=self.peer,
                error=str(e),
            )
            self.fail(wire.ERR_PROTOCOL, f"malformed message: {e}")
            return
        self.messageReceived(message)

    def messageReceived(self, message: wire.Message) -> None:
        raise NotImplementedError()

    def sendMessage(self, message: wire.Message) -> None:
        if self.transport is not None and not self._closing:
            # Not sendString: prefixing an encoded FRAME would copy its JPEG
            # a second time.
            self.transport.write(wire.encodeFramed(message))

    def unexpected(self, message: wire.Message, when: str) -> None:
        """
        Treat C{message} as a protocol violation: log it, tell the peer, and
        disconnect.
        """
        name = type(message).__name__.upper()
        self.log.warn(
            "{peer} sent {kind} {when}; disconnecting",
            peer=self.peer,
            kind=name,
            when=when,
        )
        self.fail(wire.ERR_PROTOCOL, f"unexpected {name} {when}")

    def fail(self, code: int, reason: str) -> None:
        """
        Send an ERROR and close the connection once it is written; read
        nothing more from this peer.
        """
        if self._closing:
            return
        self.sendMessage(wire.Error(code, reason))
        self._closing = True
        # A new buffer, not clear(): a message being delivered may be a view
        # of the old one, which cannot be resized while it is exported.
        self._buffer = bytearray()
        self.transport.loseConnection()

    def close(self) -> None:
        """
        Close without an ERROR (after a BYE, or on shutdown).
        """
        self._closing = True
        self.transport.loseConnection()

    def _ping(self, token: int) -> None:
        self.sendMessage(wire.Ping(token))

    def answerPing(self, ping: wire.Ping) -> None:
        """
        Answer C{ping} with PONG: timed (this end's receive and send times,
        on L{wallClock}) when the connection agreed on the clock exchange.
        """
        if not self.clockAgreed:
            self.sendMessage(wire.Pong(ping.token))
            return
        receivedAt = self.wallClock.seconds()
        self.sendMessage(
            wire.answerPing(ping, True, receivedAt, self.wallClock.seconds())
        )

    def timedOut(self, seconds: float) -> None:
        """
        The L{Watchdog}'s deadline passed: nothing arrived from the peer in
        C{seconds} (the handshake took too long, or the peer went silent).
        Send ERROR 7 and close; abort after L{ABORT_GRACE} if the peer does
        not read it (a half-open peer never will).
        """
        where = "data" if self.welcomed else "handshake"
        self.log.warn(
            "{peer}: no {what} within {seconds} s; disconnecting",
            peer=self.peer,
            what=where,
            seconds=seconds,
        )
        self.fail(wire.ERR_TIMEOUT, f"no {where} within {seconds} s")
        self.abortSoon()

    def abortSoon(self, grace: float = ABORT_GRACE) -> None:
        """
        Abort the connection in C{grace} seconds unless it is gone by then.
        """
        transport = self.transport

        def abort():
            if not self._lost:
                transport.abortConnection()

        self._abortCall = self.clock.callLater(grace, abort)

    def connectionLost(self, reason) -> None:
        self._lost = True
        self.watchdog.stop()
        call = getattr(self, "_abortCall", None)
        if call is not None and call.active():
            call.cancel()
