# -*- test-case-name: tests.test_protocol -*-
"""
The client end: L{FrameSenderProtocol} says HELLO, then relays the server's
answers to C{self.factory.sender} (an L{imageproto.sender.flow.FrameSender}),
which decides what to send next: C{hello}, C{connected}, C{acked},
C{rejected}, C{resultReceived}, C{refused}, C{failed}, C{disconnected} and
optionally C{drained}, called when the transport's send buffer empties after
a pause.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from imageproto import wire
from imageproto.protocol.framing import MessageProtocol
from imageproto.protocol.limits import senderIdleTimeout
from imageproto.wire import computeDigest, newNonce

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
            sender.rejected(message.seq, message.reason, message.retry)
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
