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

from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from imageproto import wire
from imageproto.protocol.channel import IFrameChannel
from imageproto.receiver.frames import (
    ALREADY_STORED,
    ConsumerBase,
    IFrameConsumer,
    IFrameSink,
    ReceivedFrame,
    StorageError,
    _Delivery,
)

__all__ = [
    "ALREADY_STORED",
    "StorageError",
    "ReceivedFrame",
    "IFrameConsumer",
    "IFrameSink",
    "IFrameChannel",
    "ConsumerBase",
    "Consumers",
    "FramePipeline",
]


class Consumers:
    """
    A list of L{IFrameConsumer}s told together of streams starting and
    stopping and of shutdown: what the receiver's L{FramePipeline} and a
    worker's hosted pipeline (L{imageproto.features.bus.hosted}) share.
    """

    log = Logger()

    def __init__(self, consumers=()) -> None:
        self.consumers: list = []
        for consumer in consumers:
            self.addConsumer(consumer)

    def addConsumer(self, consumer) -> None:
        """
        Send frames to C{consumer} too (an L{IFrameConsumer}).
        """
        self.consumers.append(consumer)

    def handOut(self, frame: ReceivedFrame) -> list:
        """
        Give C{frame} to every consumer.

        @return: the L{Deferred}s of the consumers that have work to finish
            with it (a consumer that raised counts as one that failed); empty
            when every consumer took it at once.
        """
        outcomes = []
        for consumer in self.consumers:
            try:
                outcome = consumer.frameReceived(frame)
            except Exception:
                outcome = fail()
            if isinstance(outcome, Deferred):
                outcomes.append(outcome)
        return outcomes

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

    def close(self) -> Deferred:
        """
        Close every consumer (at shutdown).

        @return: a L{Deferred} that fires when all have closed.
        """
        return gatherResults(
            [maybeDeferred(c.close) for c in self.consumers], consumeErrors=True
        ).addCallback(lambda _: None)


class FramePipeline(Consumers):
    """
    Hands accepted frames to every consumer and carries their answers back;
    see the module docstring.

    @param clock: an C{IReactorTime}, for receive times.
    """

    log = Logger()

    def __init__(self, clock, consumers=()) -> None:
        super().__init__(consumers)
        self.clock = clock

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
        outcomes = self.handOut(received)
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
