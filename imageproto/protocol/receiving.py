# -*- test-case-name: tests.test_protocol -*-
"""
The server end of a sender's connection: L{FrameReceiverProtocol}.

It decodes, hands over and sends what it is given.  The handshake is the
state machine in L{imageproto.protocol.receiverhandshake}; the stream
registry (C{factory.streams}) decides who may stream under which name; and
every FRAME goes to the receiver's pipeline (C{factory.pipeline}, an
L{imageproto.receiver.pipeline.FramePipeline}), which tells this connection,
as its L{IFrameChannel}, to acknowledge, reject or answer it.
"""

from __future__ import annotations

from zope.interface import implementer

from imageproto import wire
from imageproto.protocol import hints
from imageproto.protocol.channel import IFrameChannel
from imageproto.protocol.clock import CLOCK_INTERVAL, ClockProbe
from imageproto.protocol.direct import plainTcp, readInto, sendNow
from imageproto.protocol.framing import READ_BYTES, MessageProtocol
from imageproto.protocol.limits import (
    HANDSHAKE_MAX_BYTES,
    PeerBuffer,
    ReadGate,
    WritePressure,
)
from imageproto.protocol.receiverhandshake import ReceiverMachine

__all__ = ["FrameReceiverProtocol"]


@implementer(IFrameChannel)
class FrameReceiverProtocol(MessageProtocol):
    """
    The server end of one sender's connection.

    Expects HELLO first; then FRAMEs, each answered by ACK once the
    collaborator has accepted it (or REJECT when it is not a JPEG or could
    not be stored), until BYE.  Where it is in that exchange is the state of
    an Automat machine, L{imageproto.protocol.receiverhandshake.ReceiverMachine}.
    """

    # The stream this connection attached, kept after it closes so that
    # connectionLost can detach it.
    stream = None

    @property
    def welcomed(self) -> bool:
        """
        Whether the handshake finished (read by L{MessageProtocol.timedOut}).
        """
        return self.stream is not None

    # Whether this connection waits in the buffer budget's queue.
    _budgetWait = False
    # Times PINGs once the sender agreed on the clock exchange.
    _clockProbe = None

    def connectionMade(self) -> None:
        # Until WELCOME only handshake-sized messages (see limits); _welcome
        # raises this to the factory's limit.
        self.MAX_LENGTH = min(HANDSHAKE_MAX_BYTES, self.factory.maxMessageBytes)
        self.budget = getattr(self.factory, "bufferBudget", None)
        self.log.debug("connection from {peer}", peer=self.peer)
        self._machine = ReceiverMachine(self)
        # FRAMEs go to the machine until it enters streaming, which points
        # this straight at _frameReceived: the per-frame path skips the
        # machine's dispatch.  Every way out of streaming closes the
        # connection, after which MessageProtocol delivers no more messages.
        self._onFrame = self._machine.frame
        # A TCP transport reads bufferSize bytes per reactor turn, 64 KiB by
        # default: about one frame, so every frame paid for a whole turn
        # (measured: 38 -> 31 us of receiver CPU per 60 KB frame).  The same
        # number is the write threshold past which this end pauses reading
        # from a peer that does not read its answers; 256 KiB still bounds
        # that, at a few annotated RESULTs.  (A welcomed plain TCP sender is
        # then read a MiB at a time: readLarge.)
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = max(self.transport.bufferSize, READ_BYTES)
        # The TCP connection under any pass-through wrapper: ACKs go
        # straight to its socket (see _writeAcks).
        self._tcp = plainTcp(self.transport)
        self._startLimits()

    def _startLimits(self) -> None:
        """
        Apply the factory's limits (see L{imageproto.protocol.limits}): refuse a
        connection over C{maxConnections}, start the handshake deadline, and
        pause reading while this peer's backlog is over C{maxPeerBuffer} or
        our send buffer to it is full.
        """
        factory = self.factory
        peers = factory.peers
        limit = factory.maxConnections
        self.gate = ReadGate(self._pauseReading, self._resumeReading)
        self.backlog = PeerBuffer(factory.maxPeerBuffer or 2**62)
        if peers is not None:
            if limit is not None and len(peers) >= limit:
                self.log.warn(
                    "refusing {peer}: {count} connections already open "
                    "(--max-connections {limit})",
                    peer=self.peer,
                    count=len(peers),
                    limit=limit,
                )
                self.fail(wire.ERR_BUSY, f"server busy: {limit} connections open")
                self.abortSoon()
                return
            peers.add(self)
        self.transport.registerProducer(WritePressure(self.gate), True)
        self.watchdog.expect(factory.handshakeTimeout, absolute=True)

    def _pauseReading(self) -> None:
        self.watchdog.suspend()
        self.pauseProducing()

    def _resumeReading(self) -> None:
        if not self._lost and not self._closing:
            self.watchdog.unsuspend()
            self.resumeProducing()

    def _hold(self, d, size: int) -> None:
        """
        Count C{size} bytes of a frame as held until C{d} fires.
        """
        backlog = self.backlog
        backlog.add(size)
        if backlog.over and self.gate.hold("backlog"):
            self.log.warn(
                "{peer} ({stream}): {pending} bytes await storage, over "
                "--max-peer-buffer {cap}; pausing reads from this peer",
                peer=self.peer,
                stream=self.stream.name,
                pending=backlog.pending,
                cap=backlog.cap,
            )

        def settled(result):
            backlog.remove(size)
            if not backlog.over and self.gate.release("backlog"):
                self.log.info(
                    "{peer}: backlog {pending} bytes; reading again",
                    peer=self.peer,
                    pending=backlog.pending,
                )
            return result

        d.addBoth(settled)

    def lengthLimitExceeded(self, length: int) -> None:
        if self.welcomed:
            super().lengthLimitExceeded(length)
            return
        tls = hints.looksLikeTLS(self.oversizedHead)
        self.log.warn(
            "{peer} announced a {length}-byte message before its handshake "
            "finished (at most {limit} bytes until WELCOME){why}; disconnecting",
            peer=self.peer,
            length=length,
            limit=self.MAX_LENGTH,
            why=": a TLS handshake, but this port is plain TCP" if tls else "",
        )
        self.fail(
            wire.ERR_TOO_LARGE,
            f"message of {length} bytes before the handshake finished "
            f"(limit {self.MAX_LENGTH})",
        )

    # -- the buffer budget shared by every connection (limits.BufferBudget) --

    def incompleteMessage(self, size: int) -> None:
        budget = self.budget
        # Before WELCOME messages are handshake-sized and need no budget;
        # that keeps a new sender's HELLO from queueing behind big frames.
        if budget is None or self._budgetWait or not self.welcomed:
            return
        if budget.request(self, size):
            self._reserved = size
            return
        self._budgetWait = True
        self.gate.hold("buffer budget")
        self.log.info(
            "{peer} ({stream}): {used} bytes of partial messages held across "
            "connections, --max-buffered-bytes {cap}; pausing reads from this "
            "peer until its {size}-byte message fits ({waiting} waiting)",
            peer=self.peer,
            stream=self.stream.name,
            used=budget.used,
            cap=budget.cap,
            size=size,
            waiting=budget.waiting,
        )

    def budgetGranted(self, size: int) -> None:
        """
        The budget reserved C{size} bytes for this connection's waiting
        message: read on.
        """
        self._budgetWait = False
        if self._lost:
            self.budget.release(size)
            return
        self._reserved = size
        self.gate.release("buffer budget")

    def messageCompleted(self) -> None:
        reserved, self._reserved = self._reserved, 0
        self.budget.release(reserved)

    def stringReceived(self, data) -> None:
        # Most of what a receiver reads is FRAMEs without metadata: decode
        # those without the general decoder's reader and dispatch.  Anything
        # else, or a malformed FRAME, goes the general way, which reports it.
        try:
            frame = wire.decodeFrame(data)
        except wire.WireError:
            frame = None
        if frame is None:
            super().stringReceived(data)
        else:
            self._onFrame(frame)

    def messageReceived(self, message: wire.Message) -> None:
        if isinstance(message, wire.Frame):
            self._onFrame(message)
        elif isinstance(message, wire.Hello):
            self._machine.hello(message)
        elif isinstance(message, wire.Auth):
            self._machine.auth(message)
        elif isinstance(message, wire.Ping):
            self.answerPing(message)
        elif isinstance(message, wire.Pong):
            if self._clockProbe is not None:
                self._clockProbe.ponged(message)
        elif isinstance(message, (wire.Bye, wire.Error)):
            self._machine.goodbye(message)
        else:
            self.unexpected(message, "to the server")

    # -- the clock exchange (PROTOCOL.md, "Clock offset") --------------------

    def startClockProbe(self) -> None:
        """
        The sender agreed on the clock exchange (WELCOME said SCAP_CLOCK):
        time our PINGs, a few at once and then with the heartbeat, and hand
        each sample of its clock to the stream registry.
        """
        self.clockAgreed = True
        self._clockProbe = ClockProbe(
            self.clock,
            self.watchdog.pingNow,
            self._clockSampled,
            interval=None if self.factory.heartbeat else CLOCK_INTERVAL,
        )
        self._clockProbe.start()

    def _ping(self, token: int) -> None:
        if self._clockProbe is not None:
            self._clockProbe.pinged(token)
        super()._ping(token)

    def _clockSampled(self, sample: wire.ClockSample) -> None:
        self.factory.streams.clockSampled(self.stream, self, sample)

    def fail(self, code: int, reason: str) -> None:
        super().fail(code, reason)
        self._machine.stop()

    def close(self) -> None:
        super().close()
        self._machine.stop()

    def _refuse(self, name: str, code: int, reason: str) -> None:
        self.log.warn(
            "refused {peer} as {name!r}: {reason}",
            peer=self.peer,
            name=name,
            reason=reason,
        )
        self.fail(code, reason)

    def _frameReceived(self, frame: wire.Frame) -> None:
        d = self.factory.pipeline.frameReceived(self.stream, frame, self)
        if d is not None:
            self._hold(d, len(frame.jpeg))

    # -- acknowledgements: several frames of one read, one write --------------

    # The seqs acknowledged while a read is being handled, or None between
    # reads.
    _acks = None

    def dataReceived(self, data: bytes) -> None:
        # Frames accepted at once while one read is handled are acknowledged
        # in one write when it is done: still in this reactor turn, before
        # the transport writes anything, so no ACK leaves later than it
        # would have (the sender's round trips stay true); it saves an Ack,
        # an encoding and a transport.write per frame.
        if self._acks is not None:
            super().dataReceived(data)
            return
        self._acks = acks = []
        try:
            super().dataReceived(data)
        finally:
            self._acks = None
            if acks:
                self._writeAcks(acks)

    _tcp = None

    def readLarge(self) -> None:
        """
        The peer may stream now (WELCOME): on plain TCP, read it up to
        1 MiB (L{imageproto.protocol.direct.READ_INTO_BYTES}) a reactor turn, into a buffer shared with the
        other connections (L{readInto}): fewer turns and fewer frames split
        across reads than at C{READ_BYTES} (S5's 720p frames: 66 -> 53 us
        of receiver CPU, bench/README.md, "round 3").  Before WELCOME an
        unauthenticated peer is read C{READ_BYTES} at a time.
        """
        readInto(self.transport)

    def _writeAcks(self, seqs: list) -> None:
        # Straight to the socket when the transport holds nothing: through
        # transport.write they waited for the next reactor turn, which also
        # cost two epoll changes and a turn of its own per read.
        if self.transport is not None and not self._closing:
            data = wire.encodeAcks(seqs)
            if self._tcp is None or not sendNow(self._tcp, [data]):
                self.transport.write(data)

    def sendMessage(self, message: wire.Message) -> None:
        # Whatever else goes out (a RESULT, a REJECT, a PONG) goes after the
        # ACKs already decided, in the order they were decided.
        acks = self._acks
        if acks:
            self._writeAcks(acks)
            del acks[:]
        super().sendMessage(message)

    # -- IFrameChannel: what the pipeline tells this connection to do -------

    wantsImage = False

    def acknowledge(self, seq: int) -> None:
        acks = self._acks
        if acks is not None:
            acks.append(seq)
        else:
            self._writeAcks((seq,))

    def reject(self, seq: int, reason: str, retry: bool = False) -> None:
        flags = None
        if self.stream.capabilities & wire.CAP_RETRY:
            flags = wire.REJECT_RETRY if retry else 0
        self.sendMessage(wire.Reject(seq, reason, flags))

    def sendResult(self, result: wire.Result) -> None:
        if self.stream.capabilities & wire.CAP_RESULTS and self.isOpen():
            self.sendMessage(result)

    def isOpen(self) -> bool:
        return not self._closing and not self._lost

    def pauseReading(self, reason: str) -> None:
        self.gate.hold(reason)

    def resumeReading(self, reason: str) -> None:
        self.gate.release(reason)

    def replaced(self) -> None:
        """
        A newer connection took this stream's name.
        """
        self.log.info(
            "{peer} ({stream}) replaced by a newer connection",
            peer=self.peer,
            stream=self.stream.name if self.stream else None,
        )
        self.fail(wire.ERR_REPLACED, "a newer connection took this stream name")

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        if self._clockProbe is not None:
            self._clockProbe.stop()
        if self._budgetWait:
            self._budgetWait = False
            self.budget.cancel(self)
        if self._reserved:
            self.messageCompleted()
        if self.factory.peers is not None:
            self.factory.peers.discard(self)
        self._machine.connectionLost()
        error = None if self.welcomed else hints.tlsError(reason)
        if error is not None:
            # Twisted reports a failed handshake only here, as the reason.
            self.log.warn(
                "TLS handshake with {peer} failed: {error} (a sender without "
                "TLS, or with a certificate this port does not accept)",
                peer=self.peer,
                error=error,
            )
        else:
            self.log.debug("{peer} disconnected", peer=self.peer)
