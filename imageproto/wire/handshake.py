# -*- test-case-name: tests.test_protocol -*-
"""
The sender's side of the handshake as plain data: what a sender that said
HELLO does with each message the server sends before WELCOME
(PROTOCOL.md, "The handshake" and "Authentication").

L{answerServer} decides; its callers do the input and output.  The Twisted
sender (L{imageproto.protocol.senderhandshake}) calls it from its state
machine's outputs, and the blocking client (L{imageproto.client}) from its
socket loop, so both answer a CHALLENGE, a refusal and a message out of
place alike.
"""

from __future__ import annotations

from typing import Union

from attrs import frozen

from imageproto.wire.digest import computeDigest, newNonce
from imageproto.wire.messages import (
    ERR_AUTH,
    Auth,
    Challenge,
    Error,
    Hello,
    Message,
    Ping,
    Pong,
    Welcome,
)

__all__ = [
    "NO_TOKEN_REASON",
    "Answer",
    "Welcomed",
    "Refusal",
    "Violation",
    "HandshakeStep",
    "answerServer",
]

# What a sender without a token says (in ERROR 6) to a CHALLENGE.
NO_TOKEN_REASON = "the server requires a token; start the sender with --token-file"


@frozen
class Answer:
    """
    Keep waiting for WELCOME, after sending C{message} if it is not
    C{None} (AUTH for a CHALLENGE, PONG for a PING).
    """

    message: Message | None


@frozen
class Welcomed:
    """
    The handshake is over: frames may flow.
    """

    welcome: Welcome


@frozen
class Refusal:
    """
    The handshake failed and the connection closes.

    @ivar error: the server's ERROR, or the one this end sends.
    @ivar ours: C{False} when the server refused (its ERROR arrived: answer
        nothing), C{True} when this end gives up (send C{error}, then
        close).
    """

    error: Error
    ours: bool = False


@frozen
class Violation:
    """
    The server sent C{message} out of place: send ERROR 4 with L{reason}
    and close.

    @ivar when: where the handshake was, as in C{"before WELCOME"}.
    """

    message: Message
    when: str

    @property
    def kind(self) -> str:
        return type(self.message).__name__.upper()

    @property
    def reason(self) -> str:
        return f"unexpected {self.kind} {self.when}"


HandshakeStep = Union[Answer, Welcomed, Refusal, Violation]


def answerServer(
    hello: Hello,
    message: Message,
    token: bytes | None,
    answered: bool = False,
    noToken: str = NO_TOKEN_REASON,
) -> HandshakeStep:
    """
    What a sender that sent C{hello} does with C{message}, a message from
    the server that arrived before WELCOME.

    @param hello: the HELLO this connection began with; its name goes into
        the AUTH digest.
    @param token: the shared token's UTF-8 bytes, or C{None} for none.
    @param answered: whether this connection already answered a CHALLENGE
        (a second one is out of place: WELCOME or ERROR follows AUTH).
    @param noToken: the reason sent with ERROR 6 when a CHALLENGE comes and
        C{token} is C{None}.
    @return: a L{Answer}, L{Welcomed}, L{Refusal} or L{Violation}.
    """
    if isinstance(message, Welcome):
        return Welcomed(message)
    if isinstance(message, Error):
        return Refusal(message)
    if isinstance(message, Ping):
        return Answer(Pong(message.token))
    if isinstance(message, Pong):
        return Answer(None)
    if isinstance(message, Challenge):
        if answered:
            return Violation(message, "after AUTH")
        if token is None:
            return Refusal(Error(ERR_AUTH, noToken), ours=True)
        nonce = newNonce()
        return Answer(Auth(nonce, computeDigest(token, message.nonce, nonce, hello.name)))
    return Violation(message, "before WELCOME")
