# -*- test-case-name: tests.test_factories -*-
"""
Protocol factories: they hold the collaborators a protocol talks to.
"""

from __future__ import annotations

from twisted.internet.protocol import ReconnectingClientFactory, ServerFactory
from twisted.logger import Logger

from imageproto.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    FrameReceiverProtocol,
    FrameSenderProtocol,
)

__all__ = ["ReceiverFactory", "SenderFactory"]


class ReceiverFactory(ServerFactory):
    """
    Builds L{FrameReceiverProtocol}s for one listening port.

    @ivar streams: the L{imageproto.streams.StreamRegistry} every connection
        reports to.
    @ivar maxMessageBytes: the largest message read from a sender.
    @ivar capabilities: the C{wire.SCAP_*} flags sent in WELCOME.
    @ivar heartbeat: seconds between PINGs announced in WELCOME (0: none).
    @ivar clock: an C{IReactorTime}, for receive timestamps.
    """

    protocol = FrameReceiverProtocol

    def __init__(
        self,
        streams,
        clock,
        maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        capabilities: int = 0,
        heartbeat: int = 0,
    ) -> None:
        self.streams = streams
        self.clock = clock
        self.maxMessageBytes = maxMessageBytes
        self.capabilities = capabilities
        self.heartbeat = heartbeat


class SenderFactory(ReconnectingClientFactory):
    """
    Connects (and reconnects, with backoff) one sender to a receiver.

    @ivar sender: the L{imageproto.sender.FrameSender} that decides what to
        send; it outlives each connection.
    """

    protocol = FrameSenderProtocol
    log = Logger()

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
        self.initialDelay = initialDelay
        self.delay = initialDelay
