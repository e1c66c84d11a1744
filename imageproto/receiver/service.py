# -*- test-case-name: tests.test_receiver -*-
"""
The receiver as a service an application can embed; C{twistd imageproto}
builds on the same L{ReceiverService}.

    from imageproto.receiver.service import ReceiverService

    def onFrame(frame):          # a ReceivedFrame, in the reactor thread
        print(frame.stream, frame.seq, frame.latency, len(frame.jpeg))

    receiver = ReceiverService("tcp:8080", onFrame=onFrame, saveDir="frames")
    receiver.setServiceParent(application)
    ...
    receiver.registry.snapshot()  # per-stream statistics
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from imageproto import wire
from imageproto.common.files import writeJsonAtomically
from imageproto.common.reactor import defaultReactor
from imageproto.protocol.factories import ReceiverFactory, SubscribingFactory
from imageproto.wire import DEFAULT_MAX_MESSAGE_BYTES
from imageproto.receiver.consumers import CallbackSink, DecodingSink, LatestFrameHub
from imageproto.receiver.savedir import SaveDirSink
from imageproto.receiver.pipeline import FramePipeline
from imageproto.receiver.registry import DEFAULT_MAX_STREAMS, StreamRegistry

from imageproto.receiver.reporting import StatsReporter

__all__ = [
    "ReceiverService",
    "StatsReporter",
    "ThreadPoolService",
    "writeJsonAtomically",
]


class ThreadPoolService(Service):
    """
    A small L{ThreadPool} of our own, started and stopped with the service,
    so file writes and decodes leave the reactor's shared pool free.

    @ivar runInThread: C{f(callable, *args) -> Deferred} running in this
        pool; usable before the service starts (work waits for the start).
    """

    def __init__(self, reactor, maxThreads: int = 4, name: str = "imageproto") -> None:
        self.pool = ThreadPool(minthreads=0, maxthreads=maxThreads, name=name)
        self.runInThread = partial(deferToThreadPool, reactor, self.pool)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        # Runs queued work (the last frame writes, the final stats file) to
        # completion, then joins the threads.
        self.pool.stop()


@implementer(IStreamServerEndpoint)
class _ListeningEndpoint:
    """
    Wraps an endpoint to tell L{ReceiverService.whenListening} callers
    about the port it opens.
    """

    def __init__(self, endpoint) -> None:
        self._endpoint = endpoint
        self._outcome = None
        self._waiters: list[Deferred] = []

    def listen(self, factory) -> Deferred:
        def settled(outcome):
            self._outcome = outcome
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                self._fire(waiter)
            return outcome

        return self._endpoint.listen(factory).addBoth(settled)

    def _fire(self, waiter: Deferred) -> None:
        if isinstance(self._outcome, Failure):
            waiter.errback(self._outcome)
        else:
            waiter.callback(self._outcome)

    def whenListening(self) -> Deferred:
        waiter = Deferred()
        if self._outcome is None:
            self._waiters.append(waiter)
        else:
            self._fire(waiter)
        return waiter


class _ShutdownService(Service):
    """
    At shutdown: tell live senders the receiver is going away, then close
    the consumers.  It is the last child, so it stops first.
    """

    def __init__(self, registry: StreamRegistry, pipeline: FramePipeline) -> None:
        self.registry = registry
        self.pipeline = pipeline

    def stopService(self) -> Deferred:
        super().stopService()
        d = self.registry.disconnectAll(
            wire.ERR_SHUTDOWN, "the receiver is shutting down"
        )
        d.addCallback(lambda _: self.pipeline.close())
        return d


class ReceiverService(MultiService):
    """
    A complete receiver: listens on C{endpoint}, accepts named streams and
    hands their frames to sinks.

    @param endpoint: an C{IStreamServerEndpoint}, a server endpoint string
        (C{"tcp:8080:interface=127.0.0.1"}) or a port number.
    @param onFrame: called with each accepted
        L{imageproto.receiver.consumers.ReceivedFrame} in the reactor thread; may return a
        L{Deferred} to hold back the frame's ACK.
    @param saveDir: write every frame to C{saveDir/<stream>/<seq>.jpg} before
        acknowledging it.
    @param statsFile: keep statistics as JSON in this file (updated every
        C{statsFileInterval} seconds and at shutdown).
    @param reactor: the reactor (the global one when omitted).
    @param maxStreams: how many streams may be live at once.
    @param maxMessageBytes: the largest message read from a sender.
    @param statsInterval: seconds between statistics log lines (0: never).
    @param threads: size of the worker pool for writes and decodes.
    @param onImage: called as C{onImage(frame, image)} in the reactor thread
        with each accepted frame and its decoded BGR numpy image, decoded in
        this receiver's worker pool; the ACK waits until it returns (or
        until the L{Deferred} it returns fires).

    @ivar registry: the L{StreamRegistry} (statistics: C{registry.snapshot()}).
    @ivar pipeline: the L{FramePipeline} every accepted frame goes through.
    @ivar hub: a L{LatestFrameHub} holding each stream's newest frame.
    @ivar factory: the L{ReceiverFactory}.
    @ivar runInThread: runs a call in this receiver's worker pool.
    """

    log = Logger()

    def __init__(
        self,
        endpoint,
        onFrame: Callable | None = None,
        saveDir: str | None = None,
        statsFile: str | None = None,
        reactor=None,
        *,
        maxStreams: int = DEFAULT_MAX_STREAMS,
        maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        statsInterval: float = 5.0,
        statsFileInterval: float = 1.0,
        threads: int = 4,
        onImage: Callable | None = None,
    ) -> None:
        super().__init__()
        self._subscriptions: list = []
        reactor = defaultReactor(reactor)
        self.reactor = reactor
        if isinstance(endpoint, int):
            endpoint = f"tcp:{endpoint}"
        if isinstance(endpoint, str):
            endpoint = serverFromString(reactor, endpoint)
        self.endpoint = endpoint

        self.pool = ThreadPoolService(reactor, maxThreads=threads)
        self.pool.setServiceParent(self)
        self.runInThread = self.pool.runInThread

        self.hub = LatestFrameHub()
        self.pipeline = FramePipeline(reactor, [self.hub])
        self.registry = StreamRegistry(reactor, self.pipeline, maxStreams=maxStreams)
        if saveDir is not None:
            self.addConsumer(SaveDirSink(saveDir, self.runInThread))
        if onFrame is not None:
            self.addConsumer(CallbackSink(onFrame))
        if onImage is not None:
            self.addConsumer(DecodingSink(onImage, self.runInThread))

        self.factory = ReceiverFactory(
            self.registry,
            reactor,
            maxMessageBytes=maxMessageBytes,
            # Every consumer gets each frame's metadata (ReceivedFrame).
            capabilities=wire.SCAP_METADATA,
            pipeline=self.pipeline,
        )
        if endpoint is None:
            # Listens nowhere: its connections are made outwards
            # (connectTo), as imagezmq's SUB hub does.
            self._listeningEndpoint = self.listening = None
        else:
            self._listeningEndpoint = _ListeningEndpoint(endpoint)
            self.listening = StreamServerEndpointService(
                self._listeningEndpoint, self.factory
            )
            # Make a port that cannot be opened fail twistd's start instead of
            # leaving a receiver that listens nowhere.
            self.listening._raiseSynchronously = True
            self.listening.setServiceParent(self)

        self.reporter = StatsReporter(
            self.registry,
            reactor,
            self.runInThread,
            logInterval=statsInterval,
            statsFile=statsFile,
            fileInterval=statsFileInterval,
        )
        self.reporter.setServiceParent(self)
        _ShutdownService(self.registry, self.pipeline).setServiceParent(self)

    # Set by the twistd command: a port that cannot be opened ends the
    # process with one log line and status 1 instead of a traceback.
    exitOnListenFailure = False

    def privilegedStartService(self) -> None:
        self._listenOrExit(super().privilegedStartService)

    def startService(self) -> None:
        self._listenOrExit(super().startService)

    def _listenOrExit(self, start: Callable[[], object]) -> None:
        try:
            start()
        except CannotListenError as e:
            if not self.exitOnListenFailure:
                raise
            where = f"{e.interface or 'every interface'} port {e.port}"
            self.log.error(
                "cannot listen on {where}: {reason}; stop whatever uses it (another "
                "receiver?) or choose another port",
                where=where,
                reason=str(e.socketError),
            )
            raise SystemExit(1)

    def addConsumer(self, consumer) -> None:
        """
        Send accepted frames to C{consumer} (an
        L{imageproto.receiver.pipeline.IFrameConsumer}) too.
        """
        self.pipeline.addConsumer(consumer)

    addSink = addConsumer

    def advertise(self, capabilities: int) -> None:
        """
        Announce C{capabilities} (C{wire.SCAP_*} flags) in every WELCOME,
        for a consumer that changes what senders get (a detector's RESULTs).
        """
        self.factory.capabilities |= capabilities

    def whenListening(self) -> Deferred:
        """
        A fresh L{Deferred} that fires with the C{IListeningPort} once the
        receiver listens (useful with port 0), or fails if it cannot.
        """
        if self._listeningEndpoint is None:
            return succeed(None)
        return self._listeningEndpoint.whenListening()

    def connectTo(self, host: str, port: int, initialDelay: float = 0.1,
                  maxDelay: float = 0.5) -> "SubscribingFactory":
        """
        Connect out to a publisher at C{host:port} and be the receiver on
        that connection (the publisher says HELLO), reconnecting with
        backoff while it is not up and whenever it goes away.  Its frames
        go through this receiver's registry and pipeline like any other.

        @param initialDelay: seconds before the first retry.
        @param maxDelay: the longest wait between attempts (before
            C{ReconnectingClientFactory}'s jitter).
        @return: the L{SubscribingFactory}; L{stopService} stops it.
        """
        factory = SubscribingFactory(self.factory, initialDelay, maxDelay)
        factory.clock = self.reactor
        self._subscriptions.append(factory)
        factory.connector = self.reactor.connectTCP(host, port, factory)
        return factory

    def stopService(self) -> Deferred:
        """
        Stop in three steps: every other child (closing the port and the
        senders' connections, and the sinks); then the statistics reporter,
        so its final file shows the streams disconnected; then the worker
        pool, after the last frame writes and that file are done.
        """
        Service.stopService(self)
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.stopTrying()
            connector = getattr(subscription, "connector", None)
            if connector is not None and connector.state == "connecting":
                connector.stopConnecting()
        last = (self.reporter, self.pool)
        first = [c for c in reversed(list(self)) if c not in last]
        d = _stopAll(first)
        d.addCallback(lambda _: _stopAll([self.reporter]))
        d.addCallback(lambda _: _stopAll([self.pool]))
        return d


def _stopAll(services) -> Deferred:
    """
    Stop the running C{services} at once; fires when all have stopped.
    """
    return DeferredList(
        [maybeDeferred(s.stopService) for s in services if s.running],
        consumeErrors=True,
    ).addCallback(lambda _: None)
