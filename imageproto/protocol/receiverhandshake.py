# -*- test-case-name: tests.test_protocol -*-
"""
The receiver's handshake as an Automat state machine: what
L{imageproto.protocol.receiving.FrameReceiverProtocol} does with HELLO, AUTH,
BYE and ERROR depends on where its connection is in the exchange.
"""

from __future__ import annotations

import typing

from attrs import frozen
from automat import TypeMachineBuilder

from imageproto import wire
from imageproto.protocol.tokens import AuthenticationFailed
from imageproto.wire import Refused, newNonce

__all__ = ["ReceiverMachine"]

# The machine's core is the protocol; named by this alias so that the two
# modules need not import each other.
_Core = typing.Any


class _ReceiverInputs(typing.Protocol):
    """
    What can happen to one sender's connection: the inputs of
    L{_ReceiverMachine}, the state machine behind L{imageproto.protocol.receiving.FrameReceiverProtocol}::

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
    core: _Core,
    hello: wire.Hello,
    nonce: bytes,
) -> _Challenge:
    return _Challenge(hello, nonce)


_builder = TypeMachineBuilder(_ReceiverInputs, _Core)
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
    inputs: _ReceiverInputs, core: _Core, hello: wire.Hello
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
    inputs: _ReceiverInputs, core: _Core, hello: wire.Hello
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
    core: _Core,
    hello: wire.Hello,
    nonce: bytes,
) -> None:
    core.sendMessage(wire.Challenge(nonce))


@_challenged.upon(_ReceiverInputs.auth).loop()
def _verify(
    inputs: _ReceiverInputs,
    core: _Core,
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
    core: _Core,
    hello: wire.Hello,
    stream: object,
) -> None:
    core.stream = stream
    core._onFrame = core._frameReceived
    # Frames may be sent now: lift the handshake-sized message limit.
    core.MAX_LENGTH = core.factory.maxMessageBytes
    core.readLarge()
    core.log.info("{peer} streams as {name!r}", peer=core.peer, name=hello.name)
    factory = core.factory
    capabilities, resume = factory.capabilities, None
    if hello.capabilities & wire.CAP_RESUME:
        # A finite source run again: it goes on after what we hold.
        capabilities |= wire.SCAP_RESUME
        resume = stream.resumePoint
    if hello.capabilities & wire.CAP_CLOCK:
        # Like SCAP_RESUME, only in answer: a sender that did not ask never
        # gets a timed PONG.
        capabilities |= wire.SCAP_CLOCK
    core.sendMessage(
        wire.Welcome(
            capabilities=capabilities,
            maxMessageBytes=core.MAX_LENGTH,
            heartbeat=factory.heartbeat,
            resume=resume,
        )
    )
    core.watchdog.expect(factory.idleTimeout)
    core.watchdog.heartbeat(factory.heartbeat)
    if capabilities & wire.SCAP_CLOCK:
        core.startClockProbe()


@_upon([_awaitingHello, _challenged], _ReceiverInputs.refuse, to=_closed)
def _refused(
    inputs: _ReceiverInputs,
    core: _Core,
    name: str,
    code: int,
    reason: str,
) -> None:
    core._refuse(name, code, reason)


@_upon([_streaming], _ReceiverInputs.frame)
def _frame(
    inputs: _ReceiverInputs, core: _Core, frame: wire.Frame
) -> None:
    # Only reached if a FRAME missed the direct route that _welcome sets up.
    core._frameReceived(frame)


def _unexpected(when: str):
    """
    An output that treats its message as a protocol violation C{when}.
    """

    def unexpected(
        inputs: _ReceiverInputs, core: _Core, message: wire.Message
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
    core: _Core,
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
def _detach(inputs: _ReceiverInputs, core: _Core) -> None:
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

ReceiverMachine = _builder.build()
del _builder, _input
