# -*- test-case-name: tests.test_factories -*-
"""
Protocol factories: they hold the collaborators a protocol talks to.
"""

from __future__ import annotations

from twisted.internet.protocol import ReconnectingClientFactory, ServerFactory
from twisted.logger import Logger

from imageproto.protocol.limits import (
    DEFAULT_MAX_BUFFERED_BYTES,
    BufferBudget,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PEER_BUFFER,
)
from imageproto.wire import DEFAULT_MAX_MESSAGE_BYTES
from imageproto.protocol.receiving import FrameReceiverProtocol
from imageproto.protocol.sending import FrameSenderProtocol

__all__ = ["ReceiverFactory", "SenderFactory", "SubscribingFactory"]


class ReceiverFactory(ServerFactory):
    """
    Builds L{FrameReceiverProtocol}s for one listening port.

    @ivar streams: the L{imageproto.receiver.registry.StreamRegistry} that
        decides who may stream under which name.
    @ivar pipeline: the L{imageproto.receiver.pipeline.FramePipeline} every
        FRAME goes to.
    @ivar maxMessageBytes: the largest message read from a sender.
    @ivar capabilities: the C{wire.SCAP_*} flags sent in WELCOME.
    @ivar heartbeat: seconds between PINGs announced in WELCOME (0: none).
    @ivar clock: an C{IReactorTime}, for receive timestamps.

    Security and limits (L{imageproto.protocol.limits}, L{imageproto.protocol.tokens}); set them
    after construction:

    @ivar tokens: an L{imageproto.protocol.tokens.TokenTable} senders must prove a
        token from, or C{None} for no authentication.
    @ivar maxConnections: connections over this are refused with ERROR 10.
    @ivar handshakeTimeout: seconds from connect to WELCOME, or C{None}.
    @ivar idleTimeout: seconds of silence from a welcomed sender, or C{None}.
    @ivar maxPeerBuffer: bytes of one peer's unsettled frames before reads
        from it pause.
    @ivar bufferBudget: the L{BufferBudget} for partial messages shared by
        every connection of this factory (C{None}: no cap).
    @ivar peers: the open connections.
    """

    protocol = FrameReceiverProtocol
    tokens = None
    maxConnections = DEFAULT_MAX_CONNECTIONS
    handshakeTimeout = DEFAULT_HANDSHAKE_TIMEOUT
    # Off unless configured: a sender only answers PINGs the server sends,
    # so an idle timeout without a heartbeat could drop a quiet sender.  The
    # tap turns both on (DEFAULT_HEARTBEAT, DEFAULT_IDLE_TIMEOUT).
    idleTimeout = None
    maxPeerBuffer = DEFAULT_MAX_PEER_BUFFER

    def __init__(
        self,
        streams,
        clock,
        maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        capabilities: int = 0,
        heartbeat: int = 0,
        pipeline=None,
    ) -> None:
        self.streams = streams
        self.pipeline = pipeline
        self.clock = clock
        self.maxMessageBytes = maxMessageBytes
        self.capabilities = capabilities
        self.heartbeat = heartbeat
        self.peers = set()
        self.bufferBudget = BufferBudget(max(DEFAULT_MAX_BUFFERED_BYTES, maxMessageBytes + 4))


class SenderFactory(ReconnectingClientFactory):
    """
    Connects (and reconnects, with backoff) one sender to a receiver.

    @ivar sender: the L{imageproto.sender.flow.FrameSender} that decides what to
        send; it outlives each connection.  Told through C{fail()} when
        C{maxRetries} consecutive attempts have failed.
    """

    protocol = FrameSenderProtocol
    log = Logger()
    # Security and liveness; set after construction.  token: the bytes
    # proven in answer to a CHALLENGE (None: no token).  idleTimeout: None
    # for three heartbeats, 0 for never.  heartbeat: our own PING interval,
    # used only when the server announces none.  wallClock: the clock our
    # PONGs are stamped with (None: the factory's clock), the one the
    # sender stamps frames with.
    token = None
    wallClock = None
    handshakeTimeout = DEFAULT_HANDSHAKE_TIMEOUT
    idleTimeout = None
    heartbeat = 0
    noisy = False
    _lastReason = None

    def __init__(
        self,
        sender,
        clock=None,
        maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        maxDelay: float = 5.0,
        maxRetries: int | None = None,
        initialDelay: float = 0.5,
    ) -> None:
        self.sender = sender
        if clock is not None:
            self.clock = clock
        self.maxMessageBytes = maxMessageBytes
        self.maxDelay = maxDelay
        self.maxRetries = maxRetries
        self.initialDelay = self.delay = min(initialDelay, maxDelay)
        self._explained: set[str] = set()

    def explain(self, cause: str, text: str) -> None:
        """
        Log C{text}, the likely cause of a failed handshake
        (L{imageproto.protocol.hints}), the first time C{cause} (a short key
        such as C{"tls"}) is seen: retries repeat the symptom, not the
        explanation.
        """
        if cause in self._explained:
            return
        self._explained.add(cause)
        self.log.warn("{hint}", hint=text, cause=cause)

    def clientConnectionFailed(self, connector, reason) -> None:
        self._lastReason = reason
        super().clientConnectionFailed(connector, reason)

    def clientConnectionLost(self, connector, reason) -> None:
        self._lastReason = reason
        super().clientConnectionLost(connector, reason)

    def retry(self, connector=None) -> None:
        """
        Schedule the next attempt as C{ReconnectingClientFactory} does, but
        never more than C{maxDelay} away; log it; and tell the sender when
        C{maxRetries} is used up (the base class only stops trying,
        silently).
        """
        super().retry(connector)
        if not self.continueTrying:
            return
        reason = self._lastReason.getErrorMessage() if self._lastReason else "?"
        if self.maxRetries is not None and self.retries > self.maxRetries:
            self.stopTrying()
            self.sender.fail(
                f"gave up after {self.maxRetries} retries; last error: {reason}"
            )
            return
        delay = self._callID.getTime() - self.clock.seconds()
        if delay > self.maxDelay:
            # The base class applies its jitter after the cap.
            delay = self.maxDelay
            self._callID.reset(delay)
        self.log.info(
            "{reason}; retry {n} in {delay:.1f} s",
            reason=reason,
            n=self.retries,
            delay=delay,
        )


class SubscribingFactory(ReconnectingClientFactory):
    """
    Connects (and reconnects, with backoff) a receiver to a publisher that
    listens, as imagezmq's SUB socket connects to its PUB socket.  TCP goes
    from the receiver to the publisher, but the protocol roles stay: the
    connection's protocol is the receiver's own L{FrameReceiverProtocol},
    built by (and belonging to) the receiver's L{ReceiverFactory}, so the
    stream registry, pipeline, tokens and limits all apply to it.

    @ivar receiverFactory: the receiver's L{ReceiverFactory}.
    """

    noisy = False

    def __init__(self, receiverFactory, initialDelay: float = 0.1, maxDelay: float = 0.5) -> None:
        self.receiverFactory = receiverFactory
        self.initialDelay = self.delay = initialDelay
        self.maxDelay = maxDelay
        self.connector = None

    def buildProtocol(self, addr):
        self.resetDelay()
        return self.receiverFactory.buildProtocol(addr)
