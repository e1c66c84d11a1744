# -*- test-case-name: tests.test_protocol -*-
"""
Int32StringReceiver subclasses that turn length-prefixed strings into
L{imageproto.wire} messages and hand them to a collaborator.

Decisions live in the collaborators, not here:

  - L{FrameReceiverProtocol} (server side) uses C{self.factory.streams}, an
    object with C{attach}, C{frameReceived}, C{frameRejected} and C{detach}
    (see L{imageproto.receiver.registry.StreamRegistry}).
  - L{FrameSenderProtocol} (client side) uses C{self.factory.sender}, an
    object with C{hello}, C{connected}, C{acked}, C{rejected},
    C{resultReceived}, C{refused}, C{failed} and C{disconnected}, and
    optionally C{drained}, called when the transport's send buffer empties
    after a pause (see L{imageproto.sender.flow.FrameSender}).
"""

from __future__ import annotations

import struct
import typing

from attrs import frozen
from automat import TypeMachineBuilder
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from imageproto import wire
from imageproto.protocol.tokens import AuthenticationFailed, computeDigest, newNonce
from imageproto.protocol.limits import (
    ABORT_GRACE,
    PeerBuffer,
    ReadGate,
    Watchdog,
    WritePressure,
    senderIdleTimeout,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MessageProtocol",
    "FrameReceiverProtocol",
    "FrameSenderProtocol",
    "Refused",
    "TransportPressure",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# How much a receiving transport reads at once.
READ_BYTES = 256 * 1024


class Refused(Exception):
    """
    Raised by a collaborator to refuse a peer with an ERROR message.

    @ivar code: one of the C{wire.ERR_*} codes.
    @ivar reason: a human-readable reason, sent to the peer and logged.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


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

    @property
    def peer(self) -> str:
        return describePeer(self.transport)

    def makeConnection(self, transport) -> None:
        self._buffer = bytearray()
        self._closing = False
        self.clock = self.factory.clock
        if self.clock is None:
            from twisted.internet import reactor as clock

            self.clock = clock
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
        self.watchdog.activity()
        buf = self._buffer
        buf += data
        prefix = self.prefixLength
        while not self.paused and not self._closing:
            if len(buf) < prefix:
                return
            (length,) = struct.unpack_from(self.structFormat, buf)
            if length > self.MAX_LENGTH:
                self.lengthLimitExceeded(length)
                return
            end = prefix + length
            if len(buf) < end:
                return
            # A bytearray: decodeMessage copies each field out of it once,
            # so converting it to bytes first would copy the JPEG once more.
            packet = buf[prefix:end]
            del buf[:end]
            self.stringReceived(packet)

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
        self._buffer.clear()
        self.transport.loseConnection()

    def close(self) -> None:
        """
        Close without an ERROR (after a BYE, or on shutdown).
        """
        self._closing = True
        self.transport.loseConnection()

    def _ping(self, token: int) -> None:
        self.sendMessage(wire.Ping(token))

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


class FrameReceiverProtocol(MessageProtocol):
    """
    The server end of one sender's connection.

    Expects HELLO first; then FRAMEs, each answered by ACK once the
    collaborator has accepted it (or REJECT when it is not a JPEG or could
    not be stored), until BYE.  Where it is in that exchange is the state of
    an Automat machine, L{_ReceiverMachine}; L{_ReceiverInputs} draws it.
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

    def connectionMade(self) -> None:
        self.MAX_LENGTH = self.factory.maxMessageBytes
        self.log.debug("connection from {peer}", peer=self.peer)
        self._machine = _ReceiverMachine(self)
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
        # that, at a few annotated RESULTs.
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = max(self.transport.bufferSize, READ_BYTES)
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

    def messageReceived(self, message: wire.Message) -> None:
        if isinstance(message, wire.Frame):
            self._onFrame(message)
        elif isinstance(message, wire.Hello):
            self._machine.hello(message)
        elif isinstance(message, wire.Auth):
            self._machine.auth(message)
        elif isinstance(message, wire.Ping):
            self.sendMessage(wire.Pong(message.token))
        elif isinstance(message, wire.Pong):
            pass
        elif isinstance(message, (wire.Bye, wire.Error)):
            self._machine.goodbye(message)
        else:
            self.unexpected(message, "to the server")

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
        stream = self.stream
        if not wire.isJpeg(frame.jpeg):
            self.log.warn(
                "{peer} ({stream}) sent frame {seq} whose {size} bytes are not "
                "a JPEG; rejected",
                peer=self.peer,
                stream=stream.name,
                seq=frame.seq,
                size=len(frame.jpeg),
            )
            self.factory.streams.frameRejected(stream, frame)
            self.sendMessage(wire.Reject(frame.seq, "payload is not a JPEG"))
            return
        receiveTime = self.factory.clock.seconds()
        d = self.factory.streams.frameReceived(stream, frame, receiveTime)
        if d.called and d.result is None:
            # Accepted at once (no sink had work to finish): skip the
            # backlog bookkeeping and callbacks, a tenth of the receive path.
            self._accepted(stream, frame)
            return
        self._hold(d, len(frame.jpeg))

        def accepted(_):
            self._accepted(stream, frame)

        def notAccepted(failure):
            self.log.failure(
                "frame {seq} of {stream} could not be accepted",
                failure,
                seq=frame.seq,
                stream=stream.name,
            )
            self.sendMessage(
                wire.Reject(frame.seq, "server could not store the frame")
            )

        d.addCallbacks(accepted, notAccepted)

    def _accepted(self, stream, frame: wire.Frame) -> None:
        self.sendMessage(wire.Ack(frame.seq))
        inference = self.factory.inference
        if inference is not None:
            self._infer(inference, stream, frame)

    def _infer(self, inference, stream, frame: wire.Frame) -> None:
        """
        After the ACK: hand the frame to the detector (C{factory.inference},
        an L{imageproto.features.inference.engine.InferenceService}) and send its RESULT on
        this connection when it completes, if the sender understands RESULT
        (C{CAP_RESULTS}), replies are on (C{--reply} is not C{none}) and it
        is still connected.  A live sender's stale frames are skipped and
        get no RESULT.
        """
        d = inference.submit(
            stream.name,
            frame,
            live=bool(stream.capabilities & wire.CAP_LIVE),
            key=self,
            flow=_GateFlow(self.gate),
            alive=self._stillThere,
        )
        wanted = stream.capabilities & wire.CAP_RESULTS and inference.reply != "none"

        def answered(result):
            if result is not None and wanted and self._stillThere():
                self.sendMessage(result)

        def failed(failure):
            self.log.failure(
                "RESULT for frame {seq} of {stream} not sent",
                failure,
                seq=frame.seq,
                stream=stream.name,
            )

        d.addCallback(answered).addErrback(failed)

    def _stillThere(self) -> bool:
        return not self._closing and not self._lost

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
        if self.factory.peers is not None:
            self.factory.peers.discard(self)
        self._machine.connectionLost()
        self.log.debug("{peer} disconnected", peer=self.peer)


class _ReceiverInputs(typing.Protocol):
    """
    What can happen to one sender's connection: the inputs of
    L{_ReceiverMachine}, the state machine behind L{FrameReceiverProtocol}::

                        HELLO: attach; WELCOME
        awaitingHello -----------------------------> streaming --+
          |      |                                   ^  |  ^     | FRAME:
          |      | HELLO, --token-file: CHALLENGE    |  |  +-----+ ACK/REJECT
          |      v                                   |  |
          |   challenged ----------------------------+  |
          |      |       AUTH verifies: attach; WELCOME |
          v      v                                      v
        closed <----------------------------------------+

    Every state goes to closed on a refusal (no token, a wrong digest, the
    registry says no), an unexpected message (FRAME before HELLO, HELLO
    after the handshake, AUTH without a challenge), BYE or ERROR from the
    peer, our own C{fail} or C{close}, or the connection's loss; closed
    ignores all of them but C{connectionLost}, which detaches the stream.

    A HELLO (or AUTH) is judged by an output, which feeds the verdict back
    as C{challenge}, C{attached} or C{refuse}; Automat runs that input once
    the first one has finished.  PING and PONG do not depend on the state
    and never reach the machine.
    """

    def hello(self, hello: wire.Hello) -> None:
        "The sender introduced itself."

    def challenge(self, hello: wire.Hello, nonce: bytes) -> None:
        "Tokens are on: ask the sender to prove it holds one."

    def auth(self, auth: wire.Auth) -> None:
        "The sender answered a challenge (or sent AUTH unasked)."

    def attached(self, hello: wire.Hello, stream: object) -> None:
        "The stream registry took the stream."

    def refuse(self, name: str, code: int, reason: str) -> None:
        "The handshake failed: send ERROR C{code} and close."

    def frame(self, frame: wire.Frame) -> None:
        "A FRAME arrived (through the machine only before streaming)."

    def goodbye(self, message: wire.Bye | wire.Error) -> None:
        "The peer is done: BYE, or an ERROR of its own."

    def stop(self) -> None:
        "We closed the connection (C{fail} or C{close})."

    def connectionLost(self) -> None:
        "The connection is gone."


@frozen
class _Challenge:
    """
    The HELLO a CHALLENGE answered, and the nonce it carried.
    """

    hello: wire.Hello
    nonce: bytes


def _makeChallenge(
    inputs: _ReceiverInputs,
    core: FrameReceiverProtocol,
    hello: wire.Hello,
    nonce: bytes,
) -> _Challenge:
    return _Challenge(hello, nonce)


_builder = TypeMachineBuilder(_ReceiverInputs, FrameReceiverProtocol)
_awaitingHello = _builder.state("awaitingHello")
_challenged = _builder.state("challenged", _makeChallenge)
_streaming = _builder.state("streaming")
_closed = _builder.state("closed")


def _upon(states, input, to=None):
    """
    Register the decorated output for C{input} in each of C{states}, moving
    to C{to}, or staying put if it is C{None}.

    Automat hands challenged's data to every output leaving it, and these
    outputs have no use for it: drop it for them.
    """

    def register(output):
        for state in states:
            impl = output
            if state is _challenged:
                impl = _withoutData(output)
            upon = state.upon(input)
            (upon.loop() if to is None else upon.to(to))(impl)
        return output

    return register


def _withoutData(output):
    def impl(inputs: object, core: object, data: object, *args: object) -> None:
        return output(inputs, core, *args)

    impl.__name__ = output.__name__
    return impl


def _attachOrRefuse(
    inputs: _ReceiverInputs, core: FrameReceiverProtocol, hello: wire.Hello
) -> None:
    try:
        stream = core.factory.streams.attach(
            hello.name, hello.capabilities, hello.session, core
        )
    except Refused as e:
        inputs.refuse(hello.name, e.code, e.reason)
    else:
        inputs.attached(hello, stream)


@_upon([_awaitingHello], _ReceiverInputs.hello)
def _greet(
    inputs: _ReceiverInputs, core: FrameReceiverProtocol, hello: wire.Hello
) -> None:
    """
    With C{factory.tokens} (an L{imageproto.protocol.tokens.TokenTable}), answer HELLO
    with a fresh CHALLENGE; otherwise attach the stream now.
    """
    if core.factory.tokens is None:
        _attachOrRefuse(inputs, core, hello)
    elif not hello.capabilities & wire.CAP_AUTH:
        inputs.refuse(
            hello.name, wire.ERR_AUTH, "this server requires a token (--token-file)"
        )
    else:
        inputs.challenge(hello, newNonce())


@_upon([_awaitingHello], _ReceiverInputs.challenge, to=_challenged)
def _sendChallenge(
    inputs: _ReceiverInputs,
    core: FrameReceiverProtocol,
    hello: wire.Hello,
    nonce: bytes,
) -> None:
    core.sendMessage(wire.Challenge(nonce))


@_challenged.upon(_ReceiverInputs.auth).loop()
def _verify(
    inputs: _ReceiverInputs,
    core: FrameReceiverProtocol,
    challenge: _Challenge,
    auth: wire.Auth,
) -> None:
    hello = challenge.hello
    try:
        core.factory.tokens.verify(
            hello.name, challenge.nonce, auth.nonce, auth.digest
        )
    except AuthenticationFailed as e:
        inputs.refuse(hello.name, wire.ERR_AUTH, e.reason)
    else:
        _attachOrRefuse(inputs, core, hello)


@_upon([_awaitingHello, _challenged], _ReceiverInputs.attached, to=_streaming)
def _welcome(
    inputs: _ReceiverInputs,
    core: FrameReceiverProtocol,
    hello: wire.Hello,
    stream: object,
) -> None:
    core.stream = stream
    core._onFrame = core._frameReceived
    core.log.info("{peer} streams as {name!r}", peer=core.peer, name=hello.name)
    factory = core.factory
    core.sendMessage(
        wire.Welcome(
            capabilities=factory.capabilities,
            maxMessageBytes=core.MAX_LENGTH,
            heartbeat=factory.heartbeat,
        )
    )
    core.watchdog.expect(factory.idleTimeout)
    core.watchdog.heartbeat(factory.heartbeat)


@_upon([_awaitingHello, _challenged], _ReceiverInputs.refuse, to=_closed)
def _refused(
    inputs: _ReceiverInputs,
    core: FrameReceiverProtocol,
    name: str,
    code: int,
    reason: str,
) -> None:
    core._refuse(name, code, reason)


@_upon([_streaming], _ReceiverInputs.frame)
def _frame(
    inputs: _ReceiverInputs, core: FrameReceiverProtocol, frame: wire.Frame
) -> None:
    # Only reached if a FRAME missed the direct route that _welcome sets up.
    core._frameReceived(frame)


def _unexpected(when: str):
    """
    An output that treats its message as a protocol violation C{when}.
    """

    def unexpected(
        inputs: _ReceiverInputs, core: FrameReceiverProtocol, message: wire.Message
    ) -> None:
        core.unexpected(message, when)

    unexpected.__name__ = f"unexpected {when}"
    return unexpected


_open = [_awaitingHello, _challenged, _streaming]
_upon([_awaitingHello, _challenged], _ReceiverInputs.frame, to=_closed)(
    _unexpected("before HELLO")
)
_upon([_challenged, _streaming], _ReceiverInputs.hello, to=_closed)(
    _unexpected("after the handshake")
)
_upon([_awaitingHello, _streaming], _ReceiverInputs.auth, to=_closed)(
    _unexpected("to the server")
)


@_upon(_open, _ReceiverInputs.goodbye, to=_closed)
def _peerClosed(
    inputs: _ReceiverInputs,
    core: FrameReceiverProtocol,
    message: wire.Bye | wire.Error,
) -> None:
    # Either way the sender is done.  An ERROR is not answered with one of
    # ours, which would only hide its reason.
    emit = core.log.info if isinstance(message, wire.Bye) else core.log.warn
    emit(
        "{peer} ({stream}) closes: {said}",
        peer=core.peer,
        stream=core.stream.name if core.stream else None,
        # Not "message": the legacy log bridge reserves that key.
        said=message,
    )
    core.close()


@_upon(_open, _ReceiverInputs.connectionLost, to=_closed)
@_upon([_closed], _ReceiverInputs.connectionLost)
def _detach(inputs: _ReceiverInputs, core: FrameReceiverProtocol) -> None:
    # closed may follow streaming (we closed first), or not (a refusal).
    if core.stream is not None:
        core.factory.streams.detach(core.stream, core)


def _ignore(inputs: object, core: object, *args: object) -> None:
    pass


_upon(_open, _ReceiverInputs.stop, to=_closed)(_ignore)
# Nothing is read after the connection closes, but our own fail and close
# can come again (a timeout after a refusal, say).
for _input in [
    _ReceiverInputs.hello,
    _ReceiverInputs.auth,
    _ReceiverInputs.frame,
    _ReceiverInputs.goodbye,
    _ReceiverInputs.stop,
]:
    _upon([_closed], _input)(_ignore)

_ReceiverMachine = _builder.build()
del _builder, _input


class _GateFlow:
    """
    Lets the detector's backlog pause reading from a peer through the
    protocol's read gate, beside the gate's other reasons.
    """

    def __init__(self, gate) -> None:
        self._gate = gate

    def pauseProducing(self) -> None:
        self._gate.hold("inference")

    def resumeProducing(self) -> None:
        self._gate.release("inference")


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
    C{self.factory.sender}, which decides what to send next.
    """

    welcomed = None

    def connectionMade(self) -> None:
        self.MAX_LENGTH = self.factory.maxMessageBytes
        # Twisted pauses a producer once 64 KiB wait in the transport, which
        # is one or two frames written in the same reactor turn; nothing but
        # an ACK would wake a sender waiting for the pause to end, so frames
        # would go out one ACK at a time whatever the window.  Tell it.
        self.pressure = TransportPressure(
            getattr(self.factory.sender, "drained", None)
        )
        self.transport.registerProducer(self.pressure, True)
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

    def messageReceived(self, message: wire.Message) -> None:
        sender = self.factory.sender
        if isinstance(message, wire.Ack) and self.welcomed:
            sender.acked(message.seq)
        elif isinstance(message, wire.Result) and self.welcomed:
            sender.resultReceived(message)
        elif isinstance(message, wire.Reject) and self.welcomed:
            sender.rejected(message.seq, message.reason)
        elif isinstance(message, wire.Ping):
            self.sendMessage(wire.Pong(message.token))
        elif isinstance(message, wire.Pong):
            pass
        elif isinstance(message, wire.Welcome) and not self.welcomed:
            self.welcomed = message
            self._watchServer(message)
            self.factory.resetDelay()
            sender.connected(self, message)
        elif isinstance(message, wire.Challenge) and not self.welcomed:
            self._answerChallenge(message)
        elif isinstance(message, wire.Error):
            self.log.error(
                "server {peer} says: {reason} (code {code})",
                peer=self.peer,
                reason=message.reason,
                code=message.code,
            )
            if self.welcomed:
                sender.failed(message)
            else:
                if message.code == wire.ERR_AUTH:
                    # Retrying cannot fix a wrong token: stop reconnecting.
                    self.factory.stopTrying()
                sender.refused(message)
            self.close()
        else:
            self.unexpected(
                message, "after the handshake" if self.welcomed else "before WELCOME"
            )

    def _answerChallenge(self, challenge: wire.Challenge) -> None:
        token = self.factory.token
        if token is None:
            reason = "the server requires a token; start the sender with --token-file"
            self.factory.stopTrying()
            self.factory.sender.refused(wire.Error(wire.ERR_AUTH, reason))
            self.fail(wire.ERR_AUTH, reason)
            return
        nonce = newNonce()
        digest = computeDigest(token, challenge.nonce, nonce, self._hello.name)
        self.sendMessage(wire.Auth(nonce, digest))

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
        self.sendMessage(frame)

    def sayGoodbye(self, reason: str = "") -> None:
        """
        Send BYE; the server closes the connection in answer.
        """
        self.sendMessage(wire.Bye(reason))

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.pressure.stopProducing()
        self.factory.sender.disconnected(self, reason)
