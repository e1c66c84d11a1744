# -*- test-case-name: tests.test_hub -*-
"""
A blocking hub for scripts: the receiving side of L{imageproto.connect}.

    import imageproto

    with imageproto.listen(8080) as hub:
        for frame in hub:                     # blocks until a frame comes
            image = frame.image()             # decoded here, not on the reactor
            boxes = detect(image)
            frame.reply(boxes)                # a RESULT tied to this frame

L{listen} runs the real L{imageproto.receiver.service.ReceiverService} on a
reactor of its own in a background thread, so everything the receiver does
applies (the stream naming rule, limits, tokens, TLS, C{--save-dir},
statistics: L{Hub.stats}).  Frames cross to the script through a bounded
queue:

  - a finite sender's frame is acknowledged only once the script has taken
    it from the queue, so a slow script holds senders back (each keeps at
    most its window of frames unacknowledged) and no frame is lost;
  - a live sender's frame is acknowledged at once; when the queue is full
    the oldest live frame waiting is dropped and counted (L{Hub.dropped}),
    so the script always gets fresh frames and memory stays bounded.

Only plain values and L{HubFrame}s cross between the threads: the reactor
and its objects are touched in the reactor thread alone (through
C{callFromThread} and C{blockingCallFromThread}).

The hub's reactor is a private instance, not the global one: the script can
use Twisted (or crochet) for something else, several hubs can run in one
process, and nothing is installed.  crochet (which runs the global reactor in
a thread) was measured as an alternative: C{bench/hub.py} and
C{bench/README.md}.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Iterator

from attrs import define, field
from twisted.internet.defer import Deferred
from zope.interface import implementer

from imageproto import wire
from imageproto.common.reactorthread import ReactorThread
from imageproto.receiver.pipeline import ConsumerBase, IFrameConsumer, StorageError

__all__ = ["listen", "Hub", "HubFrame", "HubClosed", "DEFAULT_QUEUE"]

#: Frames waiting for the script, beyond which live frames are dropped.
DEFAULT_QUEUE = 16


class HubClosed(Exception):
    """
    The hub was closed while the script waited for a frame.
    """


@define(eq=False)
class HubFrame:
    """
    One frame as the script gets it from L{Hub}.

    @ivar stream: the sender's stream name.
    @ivar seq: its sequence number.
    @ivar captureTime: capture time, sender's clock.
    @ivar sendTime: send time, sender's clock.
    @ivar receiveTime: receive time, this machine's clock.
    @ivar jpeg: the JPEG bytes as sent.
    @ivar metadata: the frame's metadata, or C{None} (a receiver or sender
        without per-frame metadata).
    @ivar live: whether the sender is a live source.
    @ivar session: the sender's session.
    """

    stream: str
    seq: int
    captureTime: float
    sendTime: float
    receiveTime: float
    jpeg: bytes = field(repr=False)
    metadata: object = None
    live: bool = False
    session: int = 0
    _received: object = field(default=None, repr=False)
    _hub: "Hub | None" = field(default=None, repr=False)

    @property
    def latency(self) -> float:
        """
        Seconds from capture to receipt (includes the two clocks' offset).
        """
        return self.receiveTime - self.captureTime

    def image(self):
        """
        The JPEG decoded to a BGR numpy array, in the calling thread.

        @raise ValueError: if it does not decode.
        """
        from imageproto.common.jpeg import decodeJpeg

        return decodeJpeg(self.jpeg)

    def reply(self, detections=(), image=None, processingMicros: int = 0, quality: int = 90) -> None:
        """
        Answer this frame: the sender gets a RESULT tied to it (after its
        ACK), when it takes results.

        @param detections: a list of JSON-able dicts, usually
            C{{"label", "confidence", "box": [x, y, w, h]}}.
        @param image: an annotated BGR array (JPEG-encoded here, in the
            calling thread) or JPEG bytes to send back, or C{None}.
        @param processingMicros: how long the script worked on the frame.
        """
        if image is None:
            jpeg = b""
        elif isinstance(image, (bytes, bytearray, memoryview)):
            jpeg = bytes(image)
        else:
            from imageproto.common.jpeg import encodeJpeg

            jpeg = encodeJpeg(image, quality)
        result = wire.Result(self.seq, list(detections), int(processingMicros), jpeg)
        self._hub._reply(self._received, result)


@implementer(IFrameConsumer)
class _QueueConsumer(ConsumerBase):
    """
    The hub's pipeline consumer (reactor thread side): puts frames in the
    queue the script reads, holding finite frames' ACKs until taken.
    """

    def __init__(self, hub: "Hub", answers: bool) -> None:
        self.hub = hub
        self.answers = answers

    def frameReceived(self, received):
        hub = self.hub
        frame = HubFrame(
            received.stream,
            received.seq,
            received.captureTime,
            received.sendTime,
            received.receiveTime,
            received.jpeg,
            getattr(received, "metadata", None),
            received.live,
            received.session,
            received,
            hub,
        )
        if received.live:
            hub._put(frame, None)
            return None
        taken = Deferred()
        hub._put(frame, taken)
        return taken

    def close(self) -> None:
        self.hub._shutDown()


class Hub:
    """
    The blocking receiver L{listen} returns: iterate over it for frames.

    @ivar receiver: the L{imageproto.receiver.service.ReceiverService}
        (reactor thread only).
    @ivar port: the port it listens on.
    @ivar dropped: live frames dropped because the script fell behind.
    @ivar queueSize: frames that may wait for the script.
    """

    def __init__(
        self,
        endpoint=8080,
        *,
        saveDir: str | None = None,
        statsFile: str | None = None,
        maxStreams: int | None = None,
        maxMessageBytes: int | None = None,
        tokens=None,
        clientCA: str | None = None,
        replies: bool = False,
        queueSize: int = DEFAULT_QUEUE,
        timeout: float = 10.0,
        _reactorThread=None,
    ) -> None:
        if queueSize < 1:
            raise ValueError("queueSize must be at least 1")
        self.queueSize = queueSize
        self.dropped = 0
        self._queue: deque = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = _reactorThread if _reactorThread is not None else ReactorThread()
        try:
            self.receiver, port = self._thread.call(
                self._start, endpoint, saveDir, statsFile, maxStreams, maxMessageBytes,
                tokens, clientCA, replies,
            )
        except BaseException:
            self._thread.stop()
            raise
        self.port = port.getHost().port if port is not None else None

    # -- reactor thread --------------------------------------------------------

    def _start(self, endpoint, saveDir, statsFile, maxStreams, maxMessageBytes, tokens, clientCA, replies):
        from imageproto.receiver.service import ReceiverService

        reactor = self._thread.reactor
        if isinstance(endpoint, int):
            endpoint = f"tcp:{endpoint}"
        if clientCA is not None and endpoint is not None:
            from imageproto.protocol.tls import serverEndpoint

            endpoint = serverEndpoint(reactor, endpoint, clientCA)
        options = {}
        if maxStreams is not None:
            options["maxStreams"] = maxStreams
        if maxMessageBytes is not None:
            options["maxMessageBytes"] = maxMessageBytes
        receiver = ReceiverService(
            endpoint, saveDir=saveDir, statsFile=statsFile, reactor=reactor,
            statsInterval=0, **options,
        )
        if tokens is not None:
            from imageproto.protocol.tokens import TokenTable

            if isinstance(tokens, str):
                tokens = TokenTable.fromFile(tokens)
            receiver.factory.tokens = tokens
        receiver.addConsumer(_QueueConsumer(self, replies))
        if replies:
            receiver.advertise(wire.SCAP_DETECT)
        receiver.startService()
        d = receiver.whenListening()
        d.addCallback(lambda port: (receiver, port))
        return d

    def connect(self, address) -> None:
        """
        Connect out to a publisher that listens (imagezmq's PUB side,
        L{imageproto.imagezmq.ImageSender} with a bind address) and receive
        its frames here, reconnecting with backoff while it is not up and
        whenever it goes away.  Returns at once.

        @param address: C{"tcp://host:port"}, C{"host:port"} or
            C{(host, port)}.
        """
        from imageproto.client.transport import parseAddress

        where = parseAddress(address)
        if self._closed or self._thread is None:
            raise HubClosed("the hub is closed")
        self._thread.call(self.receiver.connectTo, where.host, where.port)

    def _put(self, frame: HubFrame, taken: Deferred | None) -> None:
        with self._changed:
            if self._closed:
                if taken is not None:
                    taken.errback(StorageError("the hub is closing", True))
                return
            if frame.live and len(self._queue) >= self.queueSize:
                for i, (waiting, _) in enumerate(self._queue):
                    if waiting.live:
                        del self._queue[i]
                        self.dropped += 1
                        break
            self._queue.append((frame, taken))
            self._changed.notify()

    def _shutDown(self) -> None:
        with self._changed:
            self._closed = True
            waiting, self._queue = list(self._queue), deque()
            self._changed.notify_all()
        for _, taken in waiting:
            if taken is not None:
                taken.errback(StorageError("the hub is closing", True))

    def _reply(self, received, result: wire.Result) -> None:
        self._thread.reactor.callFromThread(received.reply, result)

    # -- the script's thread ---------------------------------------------------

    def get(self, timeout: float | None = None) -> HubFrame:
        """
        The next frame, waiting up to C{timeout} seconds (forever when
        C{None}).  Taking a finite sender's frame lets its ACK go.

        @raise TimeoutError: if no frame came in time.
        @raise HubClosed: if the hub is (or gets) closed.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._queue or self._closed, timeout):
                raise TimeoutError("no frame in time")
            if not self._queue:
                raise HubClosed("the hub is closed")
            frame, taken = self._queue.popleft()
            thread = self._thread
        if taken is not None and thread is not None:
            thread.reactor.callFromThread(taken.callback, None)
        return frame

    def __iter__(self) -> Iterator[HubFrame]:
        return self

    def __next__(self) -> HubFrame:
        try:
            return self.get()
        except HubClosed:
            raise StopIteration from None

    def pending(self) -> int:
        """
        How many frames wait for the script.
        """
        with self._changed:
            return len(self._queue)

    def stats(self) -> dict:
        """
        The receiver's statistics (the stats file's JSON object: per-stream
        frames, fps, latency percentiles, gaps, drops, connections), plus
        the hub's own C{"hub"}: C{{"dropped", "pending"}}.
        """
        if self._closed:
            raise HubClosed("the hub is closed")
        snapshot = self._thread.call(self.receiver.registry.snapshot)
        snapshot["hub"] = {"dropped": self.dropped, "pending": self.pending()}
        return snapshot

    def close(self) -> None:
        """
        Stop the receiver (senders are told it is shutting down, the stats
        file is written a last time) and its reactor thread.  A script
        waiting in L{get} gets L{HubClosed}; iteration ends.
        """
        with self._changed:
            if self._thread is None:
                return
            thread, self._thread = self._thread, None
        try:
            # Stopping the pipeline drains the queue in the reactor thread
            # (_QueueConsumer.close), failing the ACKs still held.
            thread.call(self.receiver.stopService)
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()
            thread.stop()

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def listen(endpoint=8080, **kwargs) -> Hub:
    """
    Start a receiver in the background and return the L{Hub} to read its
    frames from.

    @param endpoint: a port number, or a server endpoint string
        (C{"tcp:8080:interface=127.0.0.1"},
        C{"ssl:8443:privateKey=key.pem:certKey=cert.pem"}), or C{None} to
        listen nowhere and only receive from publishers L{Hub.connect}
        dials.
    @keyword saveDir: also write every frame to C{saveDir/<stream>/<seq>.jpg}
        (before it is acknowledged).
    @keyword statsFile: keep statistics as JSON in this file.
    @keyword maxStreams: how many streams may be connected at once.
    @keyword maxMessageBytes: the largest message read from a sender.
    @keyword tokens: a token file's path (or a C{TokenTable}): senders must
        prove a token, as with C{--token-file}.
    @keyword clientCA: with an C{ssl:} endpoint, require client certificates
        signed by this CA.
    @keyword replies: announce that the script answers every frame
        (C{SCAP_DETECT}): blocking clients then wait for each frame's
        L{HubFrame.reply} rather than its ACK.
    @keyword queueSize: frames that may wait for the script (default 16).
    @raise twisted.internet.error.CannotListenError: if the port is taken.
    """
    return Hub(endpoint, **kwargs)
