# -*- test-case-name: tests.test_client -*-
"""
One blocking TCP connection to a receiver: the handshake (L{handshake}) and
the reader thread that settles each frame's future (L{Connection}).

The bytes are L{imageproto.wire}'s (C{encodeFramed}, C{decodeLength},
C{decodeMessage}; a FRAME's are laid out by
L{imageproto.client.frames.framedParts} and gathered by L{sendParts}), and
what to answer before WELCOME is L{imageproto.wire.answerServer}'s
decision, the one the Twisted sender's state machine makes; only the socket
calls are this module's own.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from imageproto import wire
from imageproto.client.errors import ClientError, FrameRejected, ServerRefused, _Lost
from imageproto.client.frames import Reply
from imageproto.common.buffers import partsAfter

__all__ = [
    "MAX_MESSAGE_BYTES",
    "NO_TOKEN_REASON",
    "Connection",
    "handshake",
    "readMessage",
    "sendParts",
]

# The largest message read from the server.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# A message's length prefix, read in place by the reader thread (see
# Connection._read).
_LENGTH = struct.Struct("!I")

# ERROR 6's reason, sent and raised, when the server challenges a client
# without a token.
NO_TOKEN_REASON = "the server requires a token; pass token= to imageproto.connect()"


def _recvExactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ClientError("the server closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def readMessage(sock: socket.socket, limit: int = MAX_MESSAGE_BYTES) -> wire.Message:
    """
    Read one length-prefixed message from C{sock}, blocking.

    @raise ClientError: if the server closes the connection or announces a
        message over C{limit} bytes.
    @raise wire.WireError: if the message is malformed.
    """
    length = wire.decodeLength(_recvExactly(sock, wire.LENGTH_BYTES))
    if length > limit:
        raise ClientError(f"the server sent a {length}-byte message")
    return wire.decodeMessage(_recvExactly(sock, length))


def sendParts(sock: socket.socket, parts: list) -> None:
    """
    Write the buffers C{parts} to C{sock}, in order, gathered by
    C{sendmsg} rather than first copied into one string.  A blocking
    socket takes them whole unless a signal or a timeout interrupts it
    part way; then the rest is sent, from the byte where it stopped.

    @raise OSError: as C{sendmsg} does.
    """
    while parts:
        parts = partsAfter(parts, sock.sendmsg(parts))


def _sendJoined(sock, parts: list) -> None:
    # For what has no sendmsg (TLS, an adopted socket-like object).
    sock.sendall(b"".join(parts))


def _sendQuietly(sock: socket.socket, message: wire.Message) -> None:
    # A parting ERROR: the connection closes next whether it arrives or not.
    try:
        sock.sendall(wire.encodeFramed(message))
    except OSError:
        pass


def handshake(sock: socket.socket, hello: wire.Hello, token: bytes | None) -> wire.Welcome:
    """
    Say C{hello} on C{sock} and answer the server until it welcomes the
    stream, as PROTOCOL.md's handshake says (see L{wire.answerServer}).

    @param token: the shared token's bytes, or C{None}.
    @return: the server's WELCOME.
    @raise ServerRefused: if the server refused the stream, or challenged
        a client without a token (after telling it so, ERROR 6).
    @raise ClientError: if the server sent a message out of place (after
        telling it so, ERROR 4) or closed the connection.
    """
    sock.sendall(wire.encodeFramed(hello))
    answered = False
    while True:
        message = readMessage(sock)
        step = wire.answerServer(
            hello, message, token, answered=answered, noToken=NO_TOKEN_REASON
        )
        if isinstance(step, wire.Welcomed):
            return step.welcome
        if isinstance(step, wire.Answer):
            if step.message is not None:
                sock.sendall(wire.encodeFramed(step.message))
            answered = answered or isinstance(step.message, wire.Auth)
        elif isinstance(step, wire.Refusal):
            if step.ours:
                _sendQuietly(sock, step.error)
            raise ServerRefused(step.error.code, step.error.reason)
        else:
            _sendQuietly(sock, wire.Error(wire.ERR_PROTOCOL, step.reason))
            raise ClientError(step.reason)


class Connection:
    """
    One welcomed connection: a reader thread that settles the frames sent
    on it (L{imageproto.client.blocking.PendingFrame}s).

    @ivar detects: whether the server answers frames with RESULTs.
    @ivar waiting: C{seq -> (pending, sentAt)} for frames awaiting an answer.
    @ivar lock: guards C{waiting} and C{closed}; never held while blocking.
    @ivar writeLock: held while writing a message to the socket, so that
        messages from several threads are not interleaved.  The reader takes
        it only to answer a PING.
    """

    def __init__(self, client, sock, welcome: wire.Welcome) -> None:
        self.client = client
        self.sock = sock
        self.welcome = welcome
        self.detects = bool(welcome.capabilities & wire.SCAP_DETECT)
        self.waiting: dict[int, tuple] = {}
        # Live frames acknowledged but not yet answered (see _read).
        self._acked: set[int] = set()
        self.lock = threading.Lock()
        self.writeLock = threading.Lock()
        self.closed = False
        self.error: Exception | None = None
        # A plain socket's FRAMEs are gathered by sendmsg; anything else
        # (TlsTransport, an SSLSocket) gets them joined.
        self._sendParts = sendParts if type(sock) is socket.socket else _sendJoined
        self.reader = threading.Thread(
            target=self._read, name="imageproto-client-reader", daemon=True
        )
        self.reader.start()

    def write(self, message: wire.Message) -> None:
        self.writeBytes(wire.encodeFramed(message))

    def writeBytes(self, data: bytes) -> None:
        if self.closed:
            raise _Lost(self.error or "closed")
        with self.writeLock:
            try:
                self.sock.sendall(data)
            except (OSError, ValueError) as e:
                self.shutdown(e)
                raise _Lost(e) from None

    def writeParts(self, parts: list) -> None:
        """
        Write one message given as buffers (L{imageproto.client.frames.framedParts}).

        @raise _Lost: if the connection is gone, or goes while writing.
        """
        if self.closed:
            raise _Lost(self.error or "closed")
        with self.writeLock:
            try:
                self._sendParts(self.sock, parts)
            except (OSError, ValueError) as e:
                self.shutdown(e)
                raise _Lost(e) from None

    def expect(self, pending, sentAt: float) -> None:
        """
        Settle C{pending} with the answer to its frame on this connection.

        @raise _Lost: if the connection is already closed.
        """
        with self.lock:
            if self.closed:
                raise _Lost(self.error or "closed")
            self.waiting[pending.seq] = (pending, sentAt)

    def forget(self, seq: int) -> None:
        with self.lock:
            self.waiting.pop(seq, None)

    def _settle(self, seq: int, outcome) -> None:
        with self.lock:
            entry = self.waiting.pop(seq, None)
        if entry is None:
            return
        pending, sentAt = entry
        if isinstance(outcome, Exception):
            pending._settle(outcome)
            return
        roundTrip = time.monotonic() - sentAt
        if isinstance(outcome, wire.Result):
            reply = Reply(
                outcome.seq, outcome.detections, True, outcome.processingMicros,
                outcome.jpeg, roundTrip,
            )
        else:
            reply = Reply(outcome.seq, roundTrip=roundTrip)
        pending._settle(reply)

    def _settleAcks(self, seqs: list) -> None:
        """
        ACKs for C{seqs} came, in one C{recv}: without a detector they are
        the answers, settled together (one hold of each lock, one wake-up of
        the writers); with one, a live stream's are noted for
        L{_settleSkipped}, and the others' wait for their RESULTs.
        """
        if self.detects:
            if self.client.live:
                with self.lock:
                    self._acked.update(seqs)
            return
        with self.lock:
            pop = self.waiting.pop
            entries = [pop(seq, None) for seq in seqs]
        now = time.monotonic()
        self.client._settled(
            [
                (pending, Reply(pending.seq, roundTrip=now - sentAt))
                for pending, sentAt in filter(None, entries)
            ]
        )

    def _read(self) -> None:
        """
        The reader thread: read the server's messages in large chunks (one
        C{recv} brings many ACKs when frames are pipelined) and act on them
        in order.  ACKs, the message it gets most, are read in place, and
        those of one chunk are settled together (L{_settleAcks}); any other
        message is decoded by L{wire.decodeMessage}, once the ACKs before it
        are settled.
        """
        buffer = bytearray()
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ClientError("the server closed the connection")
                buffer += chunk
                size = len(buffer)
                offset = 0
                acks = []
                while size - offset >= _LENGTH.size:
                    length = _LENGTH.unpack_from(buffer, offset)[0]
                    if length > MAX_MESSAGE_BYTES:
                        # The ACKs before it were the server's: settle them.
                        if acks:
                            self._settleAcks(acks)
                        raise ClientError(f"the server sent a {length}-byte message")
                    end = offset + _LENGTH.size + length
                    if size < end:
                        break
                    seq = wire.ackSeq(buffer, offset + _LENGTH.size, length)
                    if seq is not None:
                        acks.append(seq)
                        offset = end
                        continue
                    if acks:
                        self._settleAcks(acks)
                        acks = []
                    self._dispatch(
                        wire.decodeMessage(bytes(buffer[offset + _LENGTH.size : end]))
                    )
                    offset = end
                if acks:
                    self._settleAcks(acks)
                del buffer[:offset]
        except (OSError, ValueError, ClientError, _Lost, wire.WireError) as e:
            self.shutdown(e)

    def _dispatch(self, message: wire.Message) -> None:
        if isinstance(message, wire.Result):
            self._settle(message.seq, message)
            if self.client.live:
                self._settleSkipped(message.seq)
        elif isinstance(message, wire.Ack):
            self._settleAcks([message.seq])
        elif isinstance(message, wire.Reject):
            self._settle(message.seq, FrameRejected(message.reason))
        elif isinstance(message, wire.Ping):
            self.write(wire.Pong(message.token))
        elif isinstance(message, wire.Error):
            raise ClientError(f"server error {message.code}: {message.reason}")

    def _settleSkipped(self, answered: int) -> None:
        """
        A RESULT for live frame C{answered} came.  RESULTs come in order and
        the server skips a live stream's stale frames (PROTOCOL.md,
        "Results"), so frames acknowledged before it that still wait will
        never get one: answer them with their acknowledgement
        (C{detected=False}) rather than let their callers time out.
        """
        with self.lock:
            skipped = sorted(seq for seq in self._acked if seq <= answered)
            self._acked.difference_update(skipped)
        for seq in skipped:
            if seq != answered:
                self._settle(seq, wire.Ack(seq))

    def shutdown(self, error=None) -> None:
        """
        Close the connection; the frames still waiting on it are told, so
        that whoever waits for them reconnects and sends them again.
        """
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.error = error
            waiting, self.waiting = self.waiting, {}
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for pending, _ in waiting.values():
            pending._lost(self)
