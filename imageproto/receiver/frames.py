# -*- test-case-name: tests.test_pipeline -*-
"""
What flows through the receiver's pipeline (L{imageproto.receiver.pipeline}):
each accepted frame as a L{ReceivedFrame}, the L{IFrameConsumer} interface
every consumer provides (with L{ConsumerBase} for the lifecycle methods a
consumer does not need), and how a consumer says a frame could not be kept
(L{StorageError}) or was kept already (L{ALREADY_STORED}).
"""

from __future__ import annotations

from attrs import define, field, frozen
from zope.interface import Interface

from imageproto import wire
from imageproto.receiver.stats import plausibleTime

__all__ = [
    "ALREADY_STORED",
    "StorageError",
    "ReceivedFrame",
    "IFrameConsumer",
    "IFrameSink",
    "ConsumerBase",
]


class StorageError(Exception):
    """
    A consumer could not keep a frame (a full disk, a bus that is away).
    The frame is rejected with C{reason}; with C{temporary} the sender is
    told to send it again later.  The consumer logs the condition itself
    (once, not once per frame), so the pipeline logs no traceback for it.
    """

    def __init__(self, reason: str, temporary: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


# What a consumer's Deferred fires with when the frame was already kept (it
# found the frame on disk from before a restart): the frame is acknowledged
# and counted as a duplicate, not as a new frame.
ALREADY_STORED = object()


@define(eq=False, slots=True)
class _Delivery:
    """
    One frame on its way through the pipeline: whether it has been
    acknowledged (C{True}), rejected (C{False}) or neither yet (C{None}),
    and the answers waiting for its ACK.
    """

    pipeline: "FramePipeline"
    channel: object
    acknowledged: bool | None = None
    waiting: list = field(factory=list)
    rejection: tuple = ("", False)


@frozen
class ReceivedFrame:
    """
    One frame as the receiver accepted it.

    @ivar stream: the stream's name.
    @ivar seq: the sender's sequence number (starts again when the sender
        restarts).
    @ivar captureTime: capture time on the sender's clock.
    @ivar sendTime: send time on the sender's clock.
    @ivar receiveTime: receive time on the receiver's clock.
    @ivar jpeg: the JPEG bytes exactly as sent.
    @ivar senderDropped: frames the sender had dropped so far in its session.
    @ivar live: the stream is live (a camera): a consumer that falls behind
        may skip its older frames.
    @ivar session: the sender's session id.
    @ivar metadata: the application payload the sender put on the frame
        (PROTOCOL.md, per-frame metadata), decoded: a C{dict} (a JSON
        object) or a C{str} (a JSON string); C{None} for a frame without
        any.  Consumers share it: treat it as read-only.
    """

    stream: str
    seq: int
    captureTime: float
    sendTime: float
    receiveTime: float
    jpeg: bytes = field(repr=False)
    senderDropped: int = 0
    live: bool = False
    session: int = 0
    # Left out of the hash: a dict cannot be hashed.
    metadata: object = field(default=None, hash=False)
    delivery: _Delivery | None = field(default=None, repr=False, eq=False)

    @property
    def latency(self) -> float:
        """
        Seconds from capture to receipt (includes the two clocks' offset).
        """
        return self.receiveTime - self.captureTime

    @property
    def plausibleTimes(self) -> bool:
        """
        Whether the capture and send times are finite and within
        L{imageproto.receiver.stats.PLAUSIBLE_SKEW} of C{receiveTime}, so
        that L{latency} means something.
        """
        return plausibleTime(self.captureTime, self.receiveTime) and plausibleTime(
            self.sendTime, self.receiveTime
        )

    @property
    def channel(self):
        """
        The L{IFrameChannel} the frame came from, or C{None} for a frame made
        outside a pipeline.
        """
        return None if self.delivery is None else self.delivery.channel

    def decode(self):
        """
        Decode the JPEG into a BGR C{numpy} array.

        This costs milliseconds per frame: call it in a worker thread (for
        example through C{deferToThread}), never on the reactor.

        @raise ValueError: if OpenCV cannot decode the bytes.
        """
        from imageproto.common.jpeg import decodeJpeg

        try:
            return decodeJpeg(self.jpeg)
        except ValueError:
            raise ValueError(
                f"frame {self.seq} of {self.stream!r} is not decodable"
            ) from None

    def reply(self, result: wire.Result, toSender: bool = True) -> None:
        """
        Answer this frame: tell the consumers that watch results, and send
        C{result} to the sender after the frame's ACK if C{toSender}.  A
        frame that is rejected in the end gets no answer.  Call in the
        reactor thread.
        """
        if self.delivery is not None:
            self.delivery.pipeline.reply(self, result, toSender)


class IFrameConsumer(Interface):
    """
    A consumer of accepted frames.  All methods are called in the reactor
    thread; a consumer that needs time (disk, a detector) does its work in
    its own worker or queue.
    """

    def frameReceived(frame):
        """
        A frame arrived.

        @param frame: a L{ReceivedFrame}.
        @return: C{None}, or a L{Deferred} that delays the ACK until it fires
            (an errback makes the receiver REJECT the frame instead).
        """

    def resultReady(frame, result):
        """
        A consumer answered C{frame} with C{result} (a L{wire.Result}).
        """

    def streamStarted(name):
        """
        A stream went live (its first connection, or its first since the
        last one closed).
        """

    def streamStopped(name):
        """
        A stream's connection closed and no newer one replaced it.
        """

    def close():
        """
        The receiver is shutting down.

        @return: C{None}, or a L{Deferred} that fires when the consumer is
            done.
        """


# The name consumers had before the pipeline.
IFrameSink = IFrameConsumer


class ConsumerBase:
    """
    No-op lifecycle methods for consumers that only care about frames.
    """

    def resultReady(self, frame: ReceivedFrame, result) -> None:
        pass

    def streamStarted(self, name: str) -> None:
        pass

    def streamStopped(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass
