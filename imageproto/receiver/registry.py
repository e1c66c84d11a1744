# -*- test-case-name: tests.test_streams -*-
"""
The receiver's registry of named streams: the C{factory.streams}
collaborator of L{imageproto.protocol.receiving.FrameReceiverProtocol}.

It decides who may stream under which name, replaces an older connection by
a newer one, and keeps each stream's statistics and its memory of accepted
frames (which the pipeline reads to recognise resent ones).  It tells the
pipeline when a stream starts and stops.
"""

from __future__ import annotations

from collections import deque

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from imageproto import wire
from imageproto.receiver.stats import StreamStats
from imageproto.wire import Refused, checkStreamName

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "Stream",
    "StreamRegistry",
]

DEFAULT_MAX_STREAMS = 64


@define(eq=False)
class Stream:
    """
    One named stream.  It outlives its connections, so statistics and the
    memory of accepted frames carry across a sender's reconnects.

    The memory of accepted frames is a watermark, below which every
    sequence number of the session was accepted (what a resumed sender is
    told in WELCOME), and the numbers accepted above it, at most
    C{rememberSeqs} of them (the oldest are forgotten first): a session of
    any length is remembered in bounded memory as long as its frames arrive
    roughly in order.

    @ivar protocol: the current connection, or C{None} while disconnected.
    @ivar session: the session id from the latest HELLO.
    """

    name: str
    stats: StreamStats
    capabilities: int = 0
    session: int | None = None
    protocol: object = None
    rememberSeqs: int = 1024
    _watermark: int = field(default=0, init=False, repr=False)
    _accepted: set = field(factory=set, init=False, repr=False)
    _acceptedOrder: deque = field(factory=deque, init=False, repr=False)
    _pending: dict = field(factory=dict, init=False, repr=False)

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def newSession(self, session: int) -> None:
        self.session = session
        self._watermark = 0
        self._accepted.clear()
        self._acceptedOrder.clear()

    @property
    def resumePoint(self) -> int:
        """
        Every frame of the current session numbered below this was accepted.
        """
        return self._watermark

    def wasAccepted(self, seq: int) -> bool:
        return seq < self._watermark or seq in self._accepted

    def remember(self, seq: int) -> None:
        """
        Remember that C{seq} was accepted: raise the watermark over it and
        the numbers above it already accepted, or keep it above the
        watermark, forgetting the oldest beyond L{rememberSeqs}.
        """
        if self.wasAccepted(seq):
            return
        if seq == self._watermark:
            self._watermark += 1
            while self._watermark in self._accepted:
                self._accepted.discard(self._watermark)
                self._watermark += 1
            return
        self._accepted.add(seq)
        self._acceptedOrder.append(seq)
        while len(self._acceptedOrder) > self.rememberSeqs:
            self._accepted.discard(self._acceptedOrder.popleft())


class StreamRegistry:
    """
    All streams a receiver knows, live or not.

    @param clock: an C{IReactorTime} (for connection times and L{snapshot}).
    @param listener: told C{streamStarted(name)} and C{streamStopped(name)}
        (the receiver's L{imageproto.receiver.pipeline.FramePipeline}), or
        C{None}.
    @param maxStreams: how many streams may be live at once.
    @param rememberSeqs: accepted sequence numbers remembered per stream to
        recognise resent frames.
    @param maxIdle: disconnected streams kept for their statistics; beyond
        this the one seen least recently is forgotten.
    @param statsWindow: seconds behind each stream's frame rate.
    """

    log = Logger()

    def __init__(
        self,
        clock,
        listener=None,
        maxStreams: int = DEFAULT_MAX_STREAMS,
        rememberSeqs: int = 1024,
        maxIdle: int = 256,
        statsWindow: float = 5.0,
    ) -> None:
        self.clock = clock
        self.listener = listener
        self.maxStreams = maxStreams
        self.rememberSeqs = rememberSeqs
        self.maxIdle = maxIdle
        self.statsWindow = statsWindow
        self._streams: dict[str, Stream] = {}
        self._detachWaiters: list = []
        self._sections: dict = {}
        self._attachListeners: list = []

    def addAttachListener(self, listener) -> None:
        """
        Tell C{listener} C{streamAttached(stream, protocol)} after each
        accepted HELLO and C{streamDetached(stream, protocol)} when the
        stream's current connection closes (the bus keeps a lease on each
        name in Redis).  Called synchronously during the handshake: a
        listener must not block, and its exceptions are logged, not raised.
        """
        self._attachListeners.append(listener)

    def _tellAttach(self, method: str, stream, protocol) -> None:
        for listener in self._attachListeners:
            try:
                getattr(listener, method)(stream, protocol)
            except Exception:
                self.log.failure("{listener!r}.{method} failed", listener=listener, method=method)

    def addSection(self, name: str, snapshot) -> None:
        """
        Add C{name: snapshot()} to every L{snapshot}, beside C{"streams"}
        (the bus's figures, for the stats file and C{/metrics}).
        """
        self._sections[name] = snapshot

    def _notify(self, method: str, name: str) -> None:
        if self.listener is not None:
            getattr(self.listener, method)(name)

    def liveCount(self) -> int:
        return sum(1 for s in self._streams.values() if s.connected)

    def attach(self, name: str, capabilities: int, session: int, protocol) -> Stream:
        """
        A sender said HELLO as C{name}.

        A live connection under the same name is replaced: its protocol's
        C{replaced()} is called and the newer one takes over.

        @raise Refused: for a bad name, or when C{maxStreams} are live.
        """
        checkStreamName(name)
        stream = self._streams.get(name)
        if (stream is None or not stream.connected) and (
            self.liveCount() >= self.maxStreams
        ):
            raise Refused(
                wire.ERR_STREAM_LIMIT,
                f"this receiver already has its limit of {self.maxStreams} "
                "live streams",
            )
        if stream is None:
            self._forgetIdle()
            stream = Stream(
                name,
                StreamStats(window=self.statsWindow),
                rememberSeqs=self.rememberSeqs,
            )
            self._streams[name] = stream
        newSession = stream.session != session
        if newSession:
            stream.newSession(session)
        stream.stats.connected(self.clock.seconds(), newSession)
        stream.capabilities = capabilities
        previous, stream.protocol = stream.protocol, protocol
        if previous is not None:
            previous.replaced()
        else:
            self._notify("streamStarted", name)
        self._tellAttach("streamAttached", stream, protocol)
        return stream

    def clockSampled(self, stream: Stream, protocol, sample) -> None:
        """
        C{protocol}'s clock exchange measured its sender's clock (a
        L{wire.ClockSample}); ignored unless C{protocol} is C{stream}'s
        current connection.
        """
        if stream.protocol is protocol:
            stream.stats.clockSampled(sample)

    def _forgetIdle(self) -> None:
        idle = [s for s in self._streams.values() if not s.connected]
        excess = len(idle) - self.maxIdle + 1
        if excess > 0:
            idle.sort(key=lambda s: s.stats.lastSeen or 0.0)
            for stream in idle[:excess]:
                del self._streams[stream.name]

    def detach(self, stream: Stream, protocol) -> None:
        """
        C{protocol}'s connection closed; ignored unless it is C{stream}'s
        current connection (a replaced connection closes after its successor
        attached).
        """
        if stream.protocol is not protocol:
            return
        stream.protocol = None
        self._tellAttach("streamDetached", stream, protocol)
        self._notify("streamStopped", stream.name)
        waiters, self._detachWaiters = self._detachWaiters, []
        for waiter in waiters:
            waiter()

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    def stats(self, name: str) -> StreamStats:
        """
        The statistics of stream C{name}.

        @raise KeyError: if no stream of that name is known.
        """
        return self._streams[name].stats

    def snapshot(self) -> dict:
        """
        Every known stream's statistics, JSON-ready::

            {"streams": {"<name>": {"frames": .., "bytes": .., "fps": ..,
              "latency_ms": {"p50": .., "p95": .., "p99": ..}, "gaps": ..,
              "dropped": .., "connections": .., "reconnects": ..,
              "rejected": .., "duplicates": .., "connected": true/false,
              "last_seen": <unix time>}}}
        """
        now = self.clock.seconds()
        snapshot = {
            "streams": {
                name: stream.stats.snapshot(now, stream.connected)
                for name, stream in sorted(self._streams.items())
            }
        }
        for name, section in self._sections.items():
            snapshot[name] = section()
        return snapshot

    def disconnectAll(
        self,
        code: int = wire.ERR_SHUTDOWN,
        reason: str = "the receiver is shutting down",
        grace: float = 2.0,
    ) -> Deferred:
        """
        Send every live connection an ERROR and close it (at shutdown).

        @param grace: seconds a peer gets to read the ERROR before its
            connection is aborted (a peer that does not read would otherwise
            hold the close open).
        @return: a L{Deferred} that fires once every stream has detached.
        """
        done = Deferred()
        live = [s.protocol for s in self._streams.values() if s.connected]
        if not live:
            done.callback(None)
            return done

        def check():
            if not self.liveCount() and not done.called:
                if timer.active():
                    timer.cancel()
                done.callback(None)
            elif not done.called:
                self._detachWaiters.append(check)

        def abort():
            for protocol in live:
                transport = getattr(protocol, "transport", None)
                if transport is not None and getattr(protocol, "connected", True):
                    transport.abortConnection()
            if not done.called:
                done.callback(None)

        timer = self.clock.callLater(grace, abort)
        self._detachWaiters.append(check)
        for protocol in live:
            protocol.fail(code, reason)
        return done
