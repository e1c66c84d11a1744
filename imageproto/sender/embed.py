# -*- test-case-name: tests.test_embed -*-
"""
The Twisted sender embedded in an application: push JPEG bytes (or images)
into a named stream and get each frame's ACK, or its RESULT, back as a
L{Deferred}.

    from imageproto.sender.embed import openStream

    async def main(reactor):
        stream = openStream(reactor, "tcp:server:8080", "cam1")
        ack = await stream.send(jpegBytes)          # a wire.Ack
        ...
        await stream.close()                        # BYE once all are settled

It is L{imageproto.sender.flow.FrameSender} on
L{imageproto.protocol.factories.SenderFactory} (reconnecting, with backoff,
through any client endpoint), the same machinery C{twistd
imageproto-sender} runs, without the capture loop: nothing here imports
OpenCV unless L{FrameStream.sendImage} is called.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.python.failure import Failure

from imageproto import wire
from imageproto.protocol.factories import SenderFactory
from imageproto.sender.flow import FrameSender
from imageproto.sender.service import SenderConnectionService

__all__ = ["FrameStream", "openStream", "FrameRejected", "FrameDropped", "FrameLost"]


class FrameRejected(Exception):
    """
    The receiver refused the frame (REJECT): C{seq} and C{reason}.
    """

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"frame {seq} rejected: {reason}")
        self.seq = seq
        self.reason = reason


class FrameDropped(Exception):
    """
    A live stream dropped the frame: the window or the socket buffer was
    full, or no receiver was connected.
    """


class FrameLost(Exception):
    """
    A live stream's frame was sent but its connection was lost before the
    ACK (a live stream does not resend stale frames).
    """


class _StreamSender(FrameSender):
    """
    A L{FrameSender} that also tells its L{FrameStream} how each frame was
    settled.
    """

    stream: "FrameStream"

    def ackedAll(self, seqs) -> None:
        super().ackedAll(seqs)
        for seq in seqs:
            self.stream._acked(seq)

    def rejected(self, seq: int, reason: str, retry: bool = False) -> None:
        super().rejected(seq, reason, retry)
        if seq not in self._unacked:
            self.stream._failed(seq, FrameRejected(seq, reason))

    def resultReceived(self, result: wire.Result) -> None:
        super().resultReceived(result)
        self.stream._result(result)

    def disconnected(self, protocol, reason) -> None:
        lost = list(self._unacked) if self.live and protocol is self.protocol else []
        super().disconnected(protocol, reason)
        for seq in lost:
            self.stream._failed(seq, FrameLost(f"frame {seq}: connection lost"))


class FrameStream:
    """
    One named stream to a receiver.

    A finite stream (C{live=False}, the default) delivers every frame, in
    order, across reconnects: frames beyond the window wait here, and
    L{send}'s Deferred fires once the receiver acknowledged the frame.  A
    live stream never waits: a frame that does not fit the window fails
    with L{FrameDropped}, and one whose connection is lost with L{FrameLost}.

    @param reactor: the reactor.
    @param endpoint: a client endpoint string (C{"tcp:host:8080"}, C{"ssl:..."})
        or an C{IStreamClientEndpoint}.
    @param name: the stream name.
    @param live: a live source (see above).
    @param window: the most frames unacknowledged at once; by default 8
        for a live stream and 16 for a finite one
        (L{imageproto.wire.defaultWindow}).
    @param results: fire each frame's Deferred with its L{wire.Result}
        rather than its L{wire.Ack} when the receiver runs a detector.
    @param token: bytes proven to a receiver that requires a token.

    @ivar sender: the L{FrameSender} (its C{summary()} has the counts and
        round trips).
    """

    def __init__(
        self,
        reactor,
        endpoint,
        name: str,
        *,
        live: bool = False,
        window: int | None = None,
        results: bool = False,
        token: bytes | None = None,
        maxDelay: float = 5.0,
    ) -> None:
        self._reactor = reactor
        destination = endpoint if isinstance(endpoint, str) else repr(endpoint)
        if isinstance(endpoint, str):
            endpoint = clientFromString(reactor, endpoint)
        self.results = results
        sender = self.sender = _StreamSender(
            name, live, reactor, window=window, awaitResults=results
        )
        sender.stream = self
        self.factory = SenderFactory(sender, reactor, maxDelay=maxDelay)
        self.factory.token = token
        self._connection = SenderConnectionService(endpoint, self.factory, destination, reactor)
        # seq -> Deferred, for frames given to the sender; frames waiting
        # for room in the window (finite streams only).
        self._waiting: dict[int, Deferred] = {}
        self._acks: dict[int, wire.Ack] = {}
        self._queue: deque = deque()
        self._closed = False

    def start(self) -> None:
        """
        Connect (and keep reconnecting).  L{openStream} calls this.
        """
        self._connection.startService()

    def send(self, jpeg, captureTime: float | None = None) -> Deferred:
        """
        Send one JPEG.

        @param jpeg: the JPEG as C{bytes} or any buffer (a C{bytearray}, the
            numpy array C{cv2.imencode} returns); it is sent without a copy,
            so do not change it until the Deferred has fired.
        @param captureTime: seconds since the epoch; now by default.
        @return: a L{Deferred} that fires with the frame's L{wire.Ack} (or,
            with C{results} and a detecting receiver, its L{wire.Result}),
            or fails with L{FrameRejected}, L{FrameDropped} or L{FrameLost}.
        """
        if self._closed:
            raise RuntimeError("send() after close()")
        if captureTime is None:
            captureTime = self._reactor.seconds()
        d = Deferred()
        if self.sender.live or (not self._queue and self.sender.ready):
            self._offer(jpeg, captureTime, d)
        else:
            self._queue.append((jpeg, captureTime, d))
            if len(self._queue) == 1:
                self.sender.whenReady().addCallback(self._drain)
        return d

    def sendImage(self, image, quality: int = 90, captureTime: float | None = None) -> Deferred:
        """
        JPEG-encode a BGR numpy image (in the reactor thread: a few ms at
        640x480; encode in a worker thread and call L{send} for more) and
        send it.
        """
        from imageproto.common.jpeg import encodeJpeg

        if captureTime is None:
            captureTime = self._reactor.seconds()
        return self.send(encodeJpeg(image, quality), captureTime)

    def whenReady(self) -> Deferred:
        """
        A Deferred that fires once a frame sent now would go out at once
        (for a producer that wants to wait rather than queue here).
        """
        if not self._queue:
            return self.sender.whenReady()
        d = Deferred()
        self._queue.append((None, None, d))
        return d

    def close(self) -> Deferred:
        """
        Send what is queued, wait until every frame is settled, say BYE and
        disconnect.

        @return: a Deferred that fires with the sender's
            L{imageproto.sender.outcome.Summary}.
        """
        self._closed = True
        done = Deferred()

        def finish(_=None):
            self.sender.sourceExhausted()
            return self.sender.whenDone()

        wait = self._whenQueueEmpty()
        wait.addCallback(finish)
        wait.addBoth(lambda outcome: self._stop(outcome, done))
        return done

    def _stop(self, outcome, done: Deferred) -> None:
        running = self._connection.running
        d = self._connection.stopService() if running else succeed(None)

        def stopped(_):
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

        d.addBoth(stopped)

    def _whenQueueEmpty(self) -> Deferred:
        if not self._queue:
            return succeed(None)
        d = Deferred()
        self._queue.append((None, None, d))
        return d

    # -- internals -----------------------------------------------------------

    def _offer(self, jpeg, captureTime: float, d: Deferred) -> None:
        sender = self.sender
        seq = sender._nextSeq
        if sender.frameCaptured(jpeg, captureTime):
            if sender._nextSeq > seq and seq in sender._unacked:
                self._waiting[seq] = d
            else:
                # Skipped: the receiver holds it from an earlier run.
                d.callback(wire.Ack(seq))
        else:
            d.errback(FrameDropped(f"frame {seq} dropped"))

    def _drain(self, _=None) -> None:
        queue = self._queue
        sender = self.sender
        while queue and sender.ready:
            jpeg, captureTime, d = queue.popleft()
            if jpeg is None:
                d.callback(None)
            else:
                self._offer(jpeg, captureTime, d)
        while queue and queue[0][0] is None:
            queue.popleft()[2].callback(None)
        if queue:
            sender.whenReady().addCallback(self._drain)

    def _acked(self, seq: int) -> None:
        d = self._waiting.get(seq)
        if d is None:
            return
        welcome = self.sender.welcome
        if (
            self.results
            and welcome is not None
            and welcome.capabilities & wire.SCAP_DETECT
        ):
            # Its RESULT follows.
            self._acks[seq] = wire.Ack(seq)
            return
        del self._waiting[seq]
        d.callback(wire.Ack(seq))

    def _result(self, result: wire.Result) -> None:
        # A live stream's receiver may skip stale frames: a RESULT for a
        # later frame settles the earlier ones with their ACK.
        for seq in [s for s in self._acks if s < result.seq]:
            self._waiting.pop(seq).callback(self._acks.pop(seq))
        d = self._waiting.pop(result.seq, None)
        self._acks.pop(result.seq, None)
        if d is not None:
            d.callback(result)

    def _failed(self, seq: int, error: Exception) -> None:
        self._acks.pop(seq, None)
        d = self._waiting.pop(seq, None)
        if d is not None:
            d.errback(error)


def openStream(reactor, endpoint, name: str, **options) -> FrameStream:
    """
    Open a L{FrameStream} and start connecting; see L{FrameStream} for the
    options.  Frames sent before the receiver answers wait for it (a live
    stream drops them).
    """
    stream = FrameStream(reactor, endpoint, name, **options)
    stream.start()
    return stream
