# -*- test-case-name: tests.test_protocol -*-
"""
The sender's handshake as an Automat state machine: what
L{imageproto.protocol.sending.FrameSenderProtocol} does with WELCOME,
CHALLENGE, ACK, REJECT, RESULT and ERROR depends on where its connection is
in the exchange.

Before WELCOME, the decisions (answer a CHALLENGE, give up, call a message
out of place) are L{imageproto.wire.answerServer}'s, which the blocking
client (L{imageproto.client}) shares; this machine adds where each one
leads and what the sender's collaborator is told.
"""

from __future__ import annotations

import typing

from automat import TypeMachineBuilder
from twisted.internet.interfaces import ISSLTransport

from imageproto import wire
from imageproto.protocol import hints
from imageproto.protocol.tls import peerCertificateSubject

__all__ = ["SenderMachine"]

# The machine's core is the protocol; named by this alias so that the two
# modules need not import each other.
_Core = typing.Any


class _SenderInputs(typing.Protocol):
    """
    What can happen to one sender's connection: the inputs of the state
    machine behind L{imageproto.protocol.sending.FrameSenderProtocol}, which
    says HELLO on connecting::

                            WELCOME: connected
        awaitingWelcome ---------------------------> streaming --+
          |      |                                   ^  |  ^     | ACK, REJECT,
          |      | CHALLENGE: AUTH                   |  |  +-----+ RESULT: relay;
          |      v                                   |  |          our BYE
          |   answeringChallenge --------------------+  |
          |      |            WELCOME: connected        |
          v      v                                      v
        closed <----------------------------------------+

    Before WELCOME (awaitingWelcome, answeringChallenge), an ERROR is a
    refusal: the sender is told C{refused} and, for ERROR 6, the factory
    stops reconnecting.  A CHALLENGE without a token is our own refusal
    (ERROR 6).  ACK, REJECT and RESULT, a sender-only message, and a second
    CHALLENGE are ERROR 4, "unexpected ... before WELCOME" (or "after
    AUTH").  Saying goodbye closes without a BYE, which may not precede
    WELCOME.

    In streaming, an ERROR is a failure (C{failed}); WELCOME, CHALLENGE and
    sender-only messages are ERROR 4 "unexpected ... after the handshake".

    Every state goes to closed on our own C{fail} or C{close} and on the
    connection's loss; closed ignores everything.

    While awaitingWelcome nothing imageproto-like has come back, so the
    symptoms of a wrong port or of TLS on one side only (the connection
    lost, bytes that are not a message, no answer by the deadline) are
    explained in the log (L{imageproto.protocol.hints}), once per cause
    (the factory's C{explain}).  In any other state the receiver has
    spoken imageproto, and they are not.  PING and PONG do not
    depend on the state and never reach the machine, and once streaming
    the protocol hands ACKs to the sender directly (the per-frame path).
    """

    def welcome(self, welcome: wire.Welcome) -> None:
        "The server accepted the stream."

    def challenge(self, challenge: wire.Challenge) -> None:
        "The server asks for proof of a token."

    def ack(self, ack: wire.Ack) -> None:
        "An ACK arrived (through the machine only before streaming)."

    def reject(self, reject: wire.Reject) -> None:
        "The server refused one frame."

    def result(self, result: wire.Result) -> None:
        "The server's detector answered one frame."

    def error(self, error: wire.Error) -> None:
        "The server sent ERROR (and closes)."

    def misplaced(self, message: wire.Message) -> None:
        "A message only a sender sends (HELLO, FRAME, BYE, AUTH)."

    def goodbye(self, reason: str) -> None:
        "We are done sending: say BYE."

    def stop(self) -> None:
        "We closed the connection (C{fail} or C{close})."

    def connectionLost(self, reason) -> None:
        "The connection is gone (C{reason}, a L{Failure})."

    def unreadable(self, data: bytes) -> None:
        "The server's bytes (C{data}, from the start) are not a message."

    def noAnswer(self, seconds: float) -> None:
        "The handshake deadline, C{seconds} after HELLO, passed."


_builder = TypeMachineBuilder(_SenderInputs, _Core)
_awaitingWelcome = _builder.state("awaitingWelcome")
_answeringChallenge = _builder.state("answeringChallenge")
_streaming = _builder.state("streaming")
_closed = _builder.state("closed")

_handshaking = [_awaitingWelcome, _answeringChallenge]
_open = [*_handshaking, _streaming]


def _upon(states, input, to=None):
    """
    Register the decorated output for C{input} in each of C{states}, moving
    to C{to}, or staying put if it is C{None}.
    """

    def register(output):
        for state in states:
            upon = state.upon(input)
            (upon.loop() if to is None else upon.to(to))(output)
        return output

    return register


# -- before WELCOME -----------------------------------------------------------


def _answer(answered: bool):
    """
    An output that takes a server message arriving before WELCOME and does
    what L{wire.answerServer} decides, C{answered} saying whether this
    connection already answered a CHALLENGE.
    """

    def answer(inputs: _SenderInputs, core: _Core, message: wire.Message) -> None:
        step = wire.answerServer(
            core._hello, message, core.factory.token, answered=answered
        )
        if isinstance(step, wire.Answer):
            core.sendMessage(step.message)
        elif isinstance(step, wire.Welcomed):
            _connected(core, step.welcome)
        elif isinstance(step, wire.Refusal):
            _refused(core, step)
        else:
            core.unexpected(message, step.when)

    answer.__name__ = "answeredChallenge" if answered else "answer"
    return answer


def _connected(core: _Core, welcome: wire.Welcome) -> None:
    core.welcomed = welcome
    # From now on our PONGs carry our clock's times, if both sides said so.
    core.clockAgreed = wire.clockAgreed(core._hello.capabilities, welcome.capabilities)
    # The per-frame path: ACKs go straight to the sender from now on.
    core._onAck = core.factory.sender.acked
    # And the ACKs of one read together, to a sender that takes them so.
    core._onAcks = getattr(core.factory.sender, "ackedAll", None)
    core._watchServer(welcome)
    core.factory.resetDelay()
    core.factory.sender.connected(core, welcome)


def _refused(core: _Core, refusal: wire.Refusal) -> None:
    factory = core.factory
    error = refusal.error
    if refusal.ours:
        # We cannot answer the CHALLENGE; neither can a retry.
        factory.stopTrying()
        factory.sender.refused(error)
        core.fail(error.code, error.reason)
        return
    _logServerError(core, error)
    if error.code == wire.ERR_AUTH:
        # Retrying cannot fix a wrong token: stop reconnecting.
        factory.stopTrying()
    factory.sender.refused(error)
    core.close()


def _logServerError(core: _Core, error: wire.Error) -> None:
    core.log.error(
        "server {peer} says: {reason} (code {code})",
        peer=core.peer,
        reason=error.reason,
        code=error.code,
    )


_firstAnswer = _answer(False)
_laterAnswer = _answer(True)
_upon([_awaitingWelcome], _SenderInputs.welcome, to=_streaming)(_firstAnswer)
_upon([_answeringChallenge], _SenderInputs.welcome, to=_streaming)(_laterAnswer)
# Without a token the answer is our ERROR 6, whose fail() then closes.
_upon([_awaitingWelcome], _SenderInputs.challenge, to=_answeringChallenge)(
    _firstAnswer
)
for _input in [
    _SenderInputs.ack,
    _SenderInputs.reject,
    _SenderInputs.result,
    _SenderInputs.error,
    _SenderInputs.misplaced,
]:
    _upon([_awaitingWelcome], _input, to=_closed)(_firstAnswer)
    _upon([_answeringChallenge], _input, to=_closed)(_laterAnswer)
_upon([_answeringChallenge], _SenderInputs.challenge, to=_closed)(_laterAnswer)


@_upon(_handshaking, _SenderInputs.goodbye, to=_closed)
def _leaveEarly(inputs: _SenderInputs, core: _Core, reason: str) -> None:
    # PROTOCOL.md: nothing but HELLO, AUTH, PING and PONG before WELCOME.
    core.log.info(
        "closing the connection to {peer} before WELCOME: {reason}",
        peer=core.peer,
        reason=reason,
    )
    core.close()


# -- the wrong port, or TLS on one side only -------------------------------------


def _tlsUnfinished(core: _Core) -> bool:
    # The server presents a certificate in every TLS handshake, so none
    # means the handshake never finished.
    return (
        ISSLTransport.providedBy(core.transport)
        and peerCertificateSubject(core.transport) is None
    )


@_upon([_awaitingWelcome], _SenderInputs.connectionLost, to=_closed)
def _lostUnanswered(inputs: _SenderInputs, core: _Core, reason) -> None:
    error = hints.tlsError(reason)
    if error is None and _tlsUnfinished(core):
        # Hung up on our ClientHello, which no TLS server does.
        error = reason.getErrorMessage()
    if error is not None:
        core.factory.explain("tls", hints.tlsHandshakeFailed(core.peer, error))
    else:
        tls = ISSLTransport.providedBy(core.transport)
        core.factory.explain("closed", hints.closedBeforeAnswer(core.peer, tls))


@_upon([_awaitingWelcome], _SenderInputs.unreadable)
def _notImageproto(inputs: _SenderInputs, core: _Core, data: bytes) -> None:
    core.factory.explain("garbage", hints.notImageproto(core.peer, data))


@_upon([_awaitingWelcome], _SenderInputs.noAnswer)
def _silent(inputs: _SenderInputs, core: _Core, seconds: float) -> None:
    if _tlsUnfinished(core):
        error = f"no answer to our ClientHello within {seconds} s"
        core.factory.explain("tls", hints.tlsHandshakeFailed(core.peer, error))
    else:
        core.factory.explain("silent", hints.noAnswer(core.peer, seconds))


# -- streaming ------------------------------------------------------------------


@_upon([_streaming], _SenderInputs.ack)
def _ack(inputs: _SenderInputs, core: _Core, ack: wire.Ack) -> None:
    # Only reached if an ACK missed the direct route _connected sets up.
    core.factory.sender.acked(ack.seq)


@_upon([_streaming], _SenderInputs.reject)
def _reject(inputs: _SenderInputs, core: _Core, reject: wire.Reject) -> None:
    core.factory.sender.rejected(reject.seq, reject.reason, reject.retry)


@_upon([_streaming], _SenderInputs.result)
def _result(inputs: _SenderInputs, core: _Core, result: wire.Result) -> None:
    core.factory.sender.resultReceived(result)


@_upon([_streaming], _SenderInputs.error, to=_closed)
def _failed(inputs: _SenderInputs, core: _Core, error: wire.Error) -> None:
    _logServerError(core, error)
    core.factory.sender.failed(error)
    core.close()


@_upon([_streaming], _SenderInputs.goodbye)
def _sayGoodbye(inputs: _SenderInputs, core: _Core, reason: str) -> None:
    # The server closes the connection in answer; ACKs may still come.
    core.sendMessage(wire.Bye(reason))


def _afterHandshake(inputs: _SenderInputs, core: _Core, message: wire.Message) -> None:
    core.unexpected(message, "after the handshake")


for _input in [
    _SenderInputs.welcome,
    _SenderInputs.challenge,
    _SenderInputs.misplaced,
]:
    _upon([_streaming], _input, to=_closed)(_afterHandshake)


# -- closing ------------------------------------------------------------------


def _ignore(inputs: object, core: object, *args: object) -> None:
    pass


_upon(_open, _SenderInputs.stop, to=_closed)(_ignore)
_upon([_answeringChallenge, _streaming], _SenderInputs.connectionLost, to=_closed)(
    _ignore
)
# Once the receiver has spoken imageproto, a wrong port is ruled out.
for _input in [_SenderInputs.unreadable, _SenderInputs.noAnswer]:
    _upon([_answeringChallenge, _streaming], _input)(_ignore)
# Nothing is read after the connection closes, but our own fail, close and
# goodbye can come again (a timeout after a refusal, say).
for _input in [
    _SenderInputs.welcome,
    _SenderInputs.challenge,
    _SenderInputs.ack,
    _SenderInputs.reject,
    _SenderInputs.result,
    _SenderInputs.error,
    _SenderInputs.misplaced,
    _SenderInputs.goodbye,
    _SenderInputs.stop,
    _SenderInputs.connectionLost,
    _SenderInputs.unreadable,
    _SenderInputs.noAnswer,
]:
    _upon([_closed], _input)(_ignore)

SenderMachine = _builder.build()
del _builder, _input
