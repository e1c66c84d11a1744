# -*- test-case-name: tests.test_protocol -*-
"""
The client end: L{FrameSenderProtocol} says HELLO, then relays the server's
answers (as the state machine in L{imageproto.protocol.senderhandshake}
allows) to C{self.factory.sender} (an L{imageproto.sender.flow.FrameSender}),
which decides what to send next: C{hello}, C{connected}, C{acked},
C{rejected}, C{resultReceived}, C{refused}, C{failed}, C{disconnected} and
optionally C{drained}, called when the transport's send buffer empties after
a pause.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from imageproto import wire
from imageproto.protocol.direct import plainTcp, sendNow
from imageproto.protocol.framing import MessageProtocol
from imageproto.protocol.limits import senderIdleTimeout
from imageproto.protocol.senderhandshake import SenderMachine

__all__ = ["FrameSenderProtocol", "TransportPressure"]


@implementer(IPushProducer)
class TransportPressure:
    """
    A producer registered with the sender's transport so that the capture
    loop can see when the socket buffer is full.

    Deliberately not the protocol itself: C{Int32StringReceiver} already has
    C{pauseProducing}/C{resumeProducing}, and they pause I{reading}.

    @ivar paused: C{True} while the transport asks us to stop writing.
    @ivar onResume: called with no arguments when the transport resumes
        us (its buffer has drained), or C{None}.
    """

    paused = False

    def __init__(self, onResume=None) -> None:
        self.onResume = onResume

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.onResume is not None:
            self.onResume()

    def stopProducing(self) -> None:
        self.paused = True


class FrameSenderProtocol(MessageProtocol):
    """
    The client end: says HELLO, then relays the server's answers to
    C{self.factory.sender}, which decides what to send next.  Where it is in
    the exchange is the state of an Automat machine,
    L{imageproto.protocol.senderhandshake.SenderMachine}.

    @ivar welcomed: the server's L{wire.Welcome} once it has arrived, else
        C{None}.
    """

    welcomed = None
    _tcp = None

    def connectionMade(self) -> None:
        self.MAX_LENGTH = self.factory.maxMessageBytes
        self._machine = SenderMachine(self)
        # ACKs' seqs go to the machine until it enters streaming, which
        # points this straight at the sender's acked: the per-frame path
        # skips the machine's dispatch (measured: 1 to 6 us an ACK through
        # it, against 0.12 us).  Every way out of streaming closes the
        # connection, after which MessageProtocol delivers no more messages.
        self._onAck = self._ackBeforeWelcome
        # Twisted pauses a producer once 64 KiB wait in the transport, which
        # is one or two frames written in the same reactor turn; nothing but
        # an ACK would wake a sender waiting for the pause to end, so frames
        # would go out one ACK at a time whatever the window.  Tell it.
        self.pressure = TransportPressure(
            getattr(self.factory.sender, "drained", None)
        )
        self.transport.registerProducer(self.pressure, True)
        # The TCP connection under any pass-through wrapper (the sender
        # service's loss reporter), for sendFrame's direct path.
        self._tcp = plainTcp(self.transport)
        self._hello = self.factory.sender.hello()
        if self.factory.token is not None:
            self._hello = wire.Hello(
                self._hello.name,
                self._hello.capabilities | wire.CAP_AUTH,
                self._hello.session,
            )
        self.sendMessage(self._hello)
        self.watchdog.expect(
            self.factory.handshakeTimeout, absolute=True
        )

    # The sender's ackedAll once streaming (if it has one), and the seqs of
    # the ACKs read so far in this read.
    _onAcks = None
    _ackBatch = None

    def dataReceived(self, data) -> None:
        # The ACKs of one read go to the sender together at its end (or
        # before any other message of it): it settles them, then wakes its
        # capture loop once, which sends the frames they made room for in
        # one go rather than one per ACK.
        if self._onAcks is None or self._ackBatch is not None:
            super().dataReceived(data)
            return
        self._ackBatch = batch = []
        try:
            super().dataReceived(data)
        finally:
            self._ackBatch = None
            if batch:
                self._onAcks(batch)

    def stringReceived(self, data) -> None:
        # Most of what a streaming sender reads is ACKs: take their seq
        # straight from the bytes, without an Ack object and dispatch.
        seq = wire.ackSeq(data)
        if seq is not None and not self._closing:
            batch = self._ackBatch
            if batch is None:
                self._onAck(seq)
            else:
                batch.append(seq)
            return
        # Whatever else came settles after the ACKs before it.
        self._flushAcks()
        super().stringReceived(data)

    def _flushAcks(self) -> None:
        batch = self._ackBatch
        if batch:
            seqs = batch[:]
            del batch[:]
            self._onAcks(seqs)

    def messageReceived(self, message: wire.Message) -> None:
        if isinstance(message, wire.Ack):
            self._onAck(message.seq)
        elif isinstance(message, wire.Result):
            self._machine.result(message)
        elif isinstance(message, wire.Reject):
            self._machine.reject(message)
        elif isinstance(message, wire.Ping):
            self.answerPing(message)
        elif isinstance(message, wire.Pong):
            pass
        elif isinstance(message, wire.Welcome):
            self._machine.welcome(message)
        elif isinstance(message, wire.Challenge):
            self._machine.challenge(message)
        elif isinstance(message, wire.Error):
            self._machine.error(message)
        else:
            self._machine.misplaced(message)

    def _ackBeforeWelcome(self, seq: int) -> None:
        self._machine.ack(wire.Ack(seq))

    def _watchServer(self, welcome: wire.Welcome) -> None:
        """
        Expect to hear from the server (its PINGs, our ACKs) at least every
        L{senderIdleTimeout}; ping it ourselves if it announced no heartbeat
        and C{factory.heartbeat} is set.
        """
        own = self.factory.heartbeat or 0
        heartbeat = welcome.heartbeat or own
        self.watchdog.expect(
            senderIdleTimeout(self.factory.idleTimeout, heartbeat)
        )
        if not welcome.heartbeat:
            self.watchdog.heartbeat(own)

    def sendFrame(self, frame: wire.Frame) -> None:
        self.sendFrameParts(wire.framedFrameParts(frame))

    # FRAMEs sent in this reactor turn, as their parts, and the call that
    # writes them at its end.
    _batch = None
    _flushCall = None

    def sendFrameParts(self, parts: list) -> None:
        """
        Send a FRAME given as L{wire.frameParts}.  On plain TCP the FRAMEs
        sent in one reactor turn (the frames an ACK made room for) go
        straight to the socket together at its end, in one C{sendmsg}
        (L{sendNow}): one system call, and one wake-up of a waiting
        receiver, for all of them (bench/README.md, "round 3").
        """
        transport = self.transport
        if transport is None or self._closing:
            return
        if self._tcp is None:
            transport.write(b"".join(parts))
            return
        batch = self._batch
        if batch is None:
            self._batch = batch = []
            self._flushCall = self.clock.callLater(0, self._flushFrames)
        batch += parts

    def _flushFrames(self) -> None:
        """
        Write the FRAMEs of this turn: straight to the socket when the
        transport holds nothing, else queued behind what it holds, as one
        string (Twisted's write takes only that).
        """
        batch = self._takeFrames()
        if not batch or self.transport is None or self._closing:
            return
        if not sendNow(self._tcp, batch):
            self.transport.write(b"".join(batch))

    def _takeFrames(self) -> list | None:
        """
        The turn's FRAMEs' parts, no longer pending: their write is no
        longer scheduled.
        """
        batch, self._batch = self._batch, None
        call, self._flushCall = self._flushCall, None
        if call is not None and call.active():
            call.cancel()
        return batch

    def sendMessage(self, message: wire.Message) -> None:
        # Nothing overtakes the FRAMEs already sent (a PONG, a BYE).
        if self._batch is not None:
            self._flushFrames()
        super().sendMessage(message)

    def sayGoodbye(self, reason: str = "") -> None:
        """
        Send BYE; the server closes the connection in answer.  Before
        WELCOME, which a BYE may not precede, just close.
        """
        self._machine.goodbye(reason)

    def fail(self, code: int, reason: str) -> None:
        super().fail(code, reason)
        self._machine.stop()

    def close(self) -> None:
        super().close()
        self._machine.stop()

    def lengthLimitExceeded(self, length: int) -> None:
        # The ACKs read before it are settled before the connection fails.
        self._flushAcks()
        # Before WELCOME this is most often not a server's message at all
        # (an HTTP answer, a TLS record): the machine explains it.
        self._machine.unreadable(self.oversizedHead)
        super().lengthLimitExceeded(length)

    def timedOut(self, seconds: float) -> None:
        self._machine.noAnswer(seconds)
        super().timedOut(seconds)

    def connectionLost(self, reason) -> None:
        # Unwritten FRAMEs are unacknowledged: the sender sends them again.
        self._takeFrames()
        super().connectionLost(reason)
        self._machine.connectionLost(reason)
        self.pressure.stopProducing()
        self.factory.sender.disconnected(self, reason)
