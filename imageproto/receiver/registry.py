# -*- test-case-name: tests.test_streams -*-
"""
The receiver's registry of named streams: the C{factory.streams}
collaborator of L{imageproto.protocol.framing.FrameReceiverProtocol}.

It decides who may stream under which name, drops resent duplicates, hands
accepted frames to the sinks and keeps per-stream statistics.
"""

from __future__ import annotations

import re
from collections import deque

from attrs import define, field
from twisted.internet.defer import (
    Deferred,
    FirstError,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from imageproto import wire
from imageproto.protocol.framing import Refused
from imageproto.receiver.consumers import ReceivedFrame
from imageproto.receiver.stats import StreamStats

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "Stream",
    "StreamRegistry",
    "checkStreamName",
]

DEFAULT_MAX_STREAMS = 64

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def checkStreamName(name: str) -> None:
    """
    Enforce the naming rule: 1 to 64 characters of C{[A-Za-z0-9._-]}, not
    starting with C{.} (a name becomes a directory name).

    @raise Refused: with C{wire.ERR_BAD_NAME} if C{name} breaks the rule.
    """
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise Refused(
            wire.ERR_BAD_NAME,
            f"stream name {name!r} must be 1-64 characters of A-Z a-z 0-9 . _ - "
            "and must not start with '.'",
        )


@define(eq=False)
class Stream:
    """
    One named stream.  It outlives its connections, so statistics and the
    memory of accepted frames carry across a sender's reconnects.

    @ivar protocol: the current connection, or C{None} while disconnected.
    @ivar session: the session id from the latest HELLO.
    """

    name: str
    stats: StreamStats
    capabilities: int = 0
    session: int | None = None
    protocol: object = None
    rememberSeqs: int = 1024
    _accepted: set = field(factory=set, init=False, repr=False)
    _acceptedOrder: deque = field(factory=deque, init=False, repr=False)
    _pending: dict = field(factory=dict, init=False, repr=False)

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def newSession(self, session: int) -> None:
        self.session = session
        self._accepted.clear()
        self._acceptedOrder.clear()

    def wasAccepted(self, seq: int) -> bool:
        return seq in self._accepted

    def remember(self, seq: int) -> None:
        """
        Remember that C{seq} was accepted, forgetting the oldest beyond
        L{rememberSeqs}.
        """
        if seq in self._accepted:
            return
        self._accepted.add(seq)
        self._acceptedOrder.append(seq)
        while len(self._acceptedOrder) > self.rememberSeqs:
            self._accepted.discard(self._acceptedOrder.popleft())


class StreamRegistry:
    """
    All streams a receiver knows, live or not.

    @param clock: an C{IReactorTime} (for connection times and L{snapshot}).
    @param sinks: L{imageproto.receiver.consumers.IFrameSink}s every accepted frame goes to.
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
        sinks=(),
        maxStreams: int = DEFAULT_MAX_STREAMS,
        rememberSeqs: int = 1024,
        maxIdle: int = 256,
        statsWindow: float = 5.0,
    ) -> None:
        self.clock = clock
        self.sinks = list(sinks)
        self.maxStreams = maxStreams
        self.rememberSeqs = rememberSeqs
        self.maxIdle = maxIdle
        self.statsWindow = statsWindow
        self._streams: dict[str, Stream] = {}
        self._detachWaiters: list = []

    def addSink(self, sink) -> None:
        """
        Send accepted frames to C{sink} too (an L{IFrameSink}).
        """
        self.sinks.append(sink)

    def _notify(self, method: str, name: str) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(name)
            except Exception:
                self.log.failure(
                    "{sink!r}.{method}({stream!r}) failed",
                    sink=sink,
                    method=method,
                    stream=name,
                )

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
        return stream

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
        self._notify("streamStopped", stream.name)
        waiters, self._detachWaiters = self._detachWaiters, []
        for waiter in waiters:
            waiter()

    def frameRejected(self, stream: Stream, frame: wire.Frame) -> None:
        """
        C{frame} was refused before reaching the sinks (not a JPEG).
        """
        stream.stats.frameRejected(self.clock.seconds())

    def frameReceived(
        self, stream: Stream, frame: wire.Frame, receiveTime: float
    ) -> Deferred:
        """
        Hand C{frame} to every sink.

        A frame already accepted in this session (the sender resends what it
        had no ACK for after a reconnect) is counted as a duplicate and
        acknowledged again without reaching the sinks; one still being
        accepted shares the first copy's outcome.

        @return: a L{Deferred} that fires once every sink has accepted the
            frame, or fails if one of them failed.
        """
        seq = frame.seq
        if stream.wasAccepted(seq):
            stream.stats.duplicateReceived(receiveTime)
            return succeed(None)
        key = (stream.session, seq)
        waiters = stream._pending.get(key)
        if waiters is not None:
            stream.stats.duplicateReceived(receiveTime)
            waiter = Deferred()
            waiters.append(waiter)
            return waiter
        received = ReceivedFrame(
            stream=stream.name,
            seq=seq,
            captureTime=frame.captureTime,
            sendTime=frame.sendTime,
            receiveTime=receiveTime,
            jpeg=frame.jpeg,
            senderDropped=frame.dropped,
        )
        # Most sinks accept at once (return None); only those with work to
        # finish, such as the save-dir writer, return a Deferred.  Gathering
        # Deferreds costs as much as the rest of the receive path, so only
        # pay for it when some sink needs it.
        outcomes = []
        for sink in self.sinks:
            try:
                outcome = sink.frameReceived(received)
            except Exception:
                outcome = fail()
            if isinstance(outcome, Deferred):
                outcomes.append(outcome)
        if not outcomes:
            self._accepted(stream, stream.session, frame, receiveTime)
            return succeed(None)

        waiters = stream._pending[key] = [Deferred()]

        def settled(result):
            del stream._pending[key]
            if isinstance(result, Failure):
                # Report the sink's own exception, not gatherResults' wrapper.
                if result.check(FirstError):
                    result = result.value.subFailure
                for waiter in waiters:
                    waiter.errback(result)
                return
            self._accepted(stream, key[0], frame, receiveTime)
            for waiter in waiters:
                waiter.callback(None)

        gatherResults(outcomes, consumeErrors=True).addBoth(settled)
        return waiters[0]

    def _accepted(
        self, stream: Stream, session: int, frame: wire.Frame, receiveTime: float
    ) -> None:
        # A frame of an earlier session, settled after its sender came back
        # with a new one, counts for nothing in the new session.
        if stream.session == session:
            stream.remember(frame.seq)
            stream.stats.frameAccepted(
                frame.seq, len(frame.jpeg), frame.captureTime, receiveTime, frame.dropped
            )

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
        return {
            "streams": {
                name: stream.stats.snapshot(now, stream.connected)
                for name, stream in sorted(self._streams.items())
            }
        }

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

    def close(self) -> Deferred:
        """
        Close every sink.

        @return: a L{Deferred} that fires when all have closed.
        """
        return gatherResults(
            [maybeDeferred(sink.close) for sink in self.sinks], consumeErrors=True
        ).addCallback(lambda _: None)
