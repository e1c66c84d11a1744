# -*- test-case-name: tests.test_pipeline -*-
"""
The receiver's one frame pipeline.

Every protocol that receives frames (the native one, the compatibility
listeners) hands each frame to L{FramePipeline.frameReceived} together with
an L{IFrameChannel}: the connection it came from, which can acknowledge,
reject and answer it.  The pipeline then:

  1. rejects what is not a JPEG, and answers a resent frame it already has
     with a second ACK, without passing it on;
  2. hands the frame, as a L{ReceivedFrame}, to every L{IFrameConsumer}
     (saving, recording, the viewer, metrics, the application's callback,
     the detector, the bus): all consumers are attached the same way;
  3. acknowledges the frame once every consumer that returned a L{Deferred}
     has finished with it (C{--save-dir} does, so an ACK means the frame is
     on disk), or rejects it if one failed;
  4. carries answers back: a consumer that has something to say about a
     frame (a detector's RESULT) calls L{ReceivedFrame.reply}, and the
     pipeline sends it on the frame's channel after its ACK, and tells the
     consumers that watch results (the viewer draws the newest boxes).

The protocols know nothing of detectors or reply modes, and consumers know
nothing of connections beyond the channel.
"""

from __future__ import annotations

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from imageproto import wire
from imageproto.protocol.channel import IFrameChannel
from imageproto.receiver.stats import plausibleTime

__all__ = [
    "ALREADY_STORED",
    "StorageError",
    "ReceivedFrame",
    "IFrameConsumer",
    "IFrameSink",
    "IFrameChannel",
    "ConsumerBase",
    "FramePipeline",
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


class FramePipeline:
    """
    Hands accepted frames to every consumer and carries their answers back;
    see the module docstring.

    @param clock: an C{IReactorTime}, for receive times.
    """

    log = Logger()

    def __init__(self, clock, consumers=()) -> None:
        self.clock = clock
        self.consumers: list = []
        for consumer in consumers:
            self.addConsumer(consumer)

    def addConsumer(self, consumer) -> None:
        """
        Send frames to C{consumer} too (an L{IFrameConsumer}).
        """
        self.consumers.append(consumer)

    # -- stream lifecycle, from the registry --------------------------------

    def streamStarted(self, name: str) -> None:
        self._notify("streamStarted", name)

    def streamStopped(self, name: str) -> None:
        self._notify("streamStopped", name)

    def _notify(self, method: str, *args) -> None:
        for consumer in self.consumers:
            try:
                getattr(consumer, method)(*args)
            except Exception:
                self.log.failure(
                    "{consumer!r}.{method} failed", consumer=consumer, method=method
                )

    # -- frames --------------------------------------------------------------

    def frameReceived(self, stream, frame: wire.Frame, channel) -> Deferred | None:
        """
        C{frame} arrived on C{channel} for C{stream} (an
        L{imageproto.receiver.registry.Stream}).  The channel is told to
        acknowledge or reject it, now or later.

        @return: C{None} when the frame was settled at once, or a
            L{Deferred} that fires (with C{None}, never failing) once it is,
            for a protocol that counts the bytes it holds.
        """
        now = self.clock.seconds()
        seq = frame.seq
        if not wire.isJpeg(frame.jpeg):
            self.log.warn(
                "{stream}: frame {seq}'s {size} bytes are not a JPEG; rejected",
                stream=stream.name,
                seq=seq,
                size=len(frame.jpeg),
            )
            stream.stats.frameRejected(now)
            channel.reject(seq, "payload is not a JPEG")
            return None
        if stream.wasAccepted(seq):
            # Resent after a reconnect: acknowledged again, stored once.
            stream.stats.duplicateReceived(now)
            channel.acknowledge(seq)
            return None
        session = stream.session
        key = (session, seq)
        inFlight = stream._pending.get(key)
        if inFlight is not None:
            # The first copy is still with the consumers: share its outcome.
            stream.stats.duplicateReceived(now)
            waiter = Deferred()
            inFlight.append(waiter)
            return waiter.addCallback(self._settleCopy, channel, seq)
        delivery = _Delivery(self, channel)
        received = ReceivedFrame(
            stream.name,
            seq,
            frame.captureTime,
            frame.sendTime,
            now,
            frame.jpeg,
            frame.dropped,
            bool(stream.capabilities & wire.CAP_LIVE),
            session,
            # Checked by the decoder already; decoded once for every consumer.
            None if frame.metadata is None else wire.decodeMetadata(frame.metadata),
            delivery,
        )
        # Most consumers take a frame at once (return None); only those with
        # work to finish first, such as the save-dir writer, return a
        # Deferred.  Gathering Deferreds costs as much as the rest of the
        # receive path, so only pay for it when some consumer needs it.
        outcomes = []
        for consumer in self.consumers:
            try:
                outcome = consumer.frameReceived(received)
            except Exception:
                outcome = Failure()
            if isinstance(outcome, Deferred):
                outcomes.append(outcome)
            elif isinstance(outcome, Failure):
                outcomes.append(Deferred())
                outcomes[-1].errback(outcome)
        if not outcomes:
            self._accept(stream, received)
            return None
        waiters = stream._pending[key] = []
        done = Deferred()

        def settled(result):
            del stream._pending[key]
            if isinstance(result, Failure):
                # Report the consumer's own exception, not gatherResults'.
                if result.check(FirstError):
                    result = result.value.subFailure
                self._reject(stream, received, result)
            else:
                self._accept(stream, received, ALREADY_STORED in result)
            for waiter in waiters:
                waiter.callback(delivery)
            done.callback(None)

        gatherResults(outcomes, consumeErrors=True).addBoth(settled)
        return done

    def _settleCopy(self, first: _Delivery, channel, seq: int) -> None:
        if first.acknowledged:
            channel.acknowledge(seq)
        else:
            channel.reject(seq, *first.rejection)

    def _accept(self, stream, frame: ReceivedFrame, already: bool = False) -> None:
        # A frame of an earlier session, settled after its sender came back
        # with a new one, counts for nothing in the new session.
        if stream.session == frame.session and already:
            stream.remember(frame.seq)
            stream.stats.duplicateReceived(frame.receiveTime)
        elif stream.session == frame.session:
            stream.remember(frame.seq)
            stream.stats.frameAccepted(
                frame.seq,
                len(frame.jpeg),
                frame.captureTime,
                frame.receiveTime,
                frame.senderDropped,
                frame.sendTime,
            )
        delivery = frame.delivery
        delivery.acknowledged = True
        delivery.channel.acknowledge(frame.seq)
        waiting, delivery.waiting = delivery.waiting, []
        for result in waiting:
            delivery.channel.sendResult(result)

    def _reject(self, stream, frame: ReceivedFrame, failure: Failure) -> None:
        error = failure.check(StorageError) and failure.value
        if error:
            rejection = (error.reason, error.temporary)
            stream.stats.storageFailed(frame.receiveTime)
        else:
            self.log.failure(
                "frame {seq} of {stream} could not be accepted",
                failure,
                seq=frame.seq,
                stream=stream.name,
            )
            rejection = ("server could not store the frame", False)
            stream.stats.frameRejected(frame.receiveTime)
        delivery = frame.delivery
        delivery.acknowledged = False
        delivery.waiting = []
        delivery.rejection = rejection
        delivery.channel.reject(frame.seq, *rejection)

    # -- answers -------------------------------------------------------------

    def reply(self, frame: ReceivedFrame, result: wire.Result, toSender: bool) -> None:
        """
        See L{ReceivedFrame.reply}.
        """
        delivery = frame.delivery
        if delivery.acknowledged is False:
            return
        self._notify("resultReady", frame, result)
        if not toSender:
            return
        if delivery.acknowledged:
            delivery.channel.sendResult(result)
        else:
            delivery.waiting.append(result)

    @property
    def answers(self) -> bool:
        """
        Whether some consumer answers frames (a detector runs): a peer that
        waits for an answer should wait for it rather than for the ACK.
        """
        return any(getattr(c, "answers", False) for c in self.consumers)

    def close(self) -> Deferred:
        """
        Close every consumer (at shutdown).

        @return: a L{Deferred} that fires when all have closed.
        """
        return gatherResults(
            [maybeDeferred(c.close) for c in self.consumers], consumeErrors=True
        ).addCallback(lambda _: None)
