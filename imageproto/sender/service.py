# -*- test-case-name: tests.test_services -*-
"""
The sender's services: the capture loop, the reconnecting client connection,
and the L{SenderService} that ties them to a L{FrameSender} and ends the run.

How an endpoint string meets C{ReconnectingClientFactory}
---------------------------------------------------------

C{--connect} takes any client endpoint string (C{clientFromString}), but
C{ReconnectingClientFactory} schedules its retries by calling
C{connector.connect()}, and endpoints have no connectors.
L{EndpointConnector} is the adapter: an C{IConnector} whose C{connect()}
calls C{endpoint.connect()}, reports a failed attempt to
C{factory.clientConnectionFailed(connector, reason)} and a lost connection
(seen through a thin L{ProtocolWrapper}) to
C{factory.clientConnectionLost(connector, reason)}, exactly as
C{reactor.connectTCP}'s connector would.  The factory's own backoff,
C{maxDelay}, C{maxRetries}, C{resetDelay()} and C{stopTrying()} therefore
work unchanged, for TCP, TLS, UNIX sockets or any endpoint plugin.
(C{ClientService} would also retry an endpoint, but it has its own backoff
policy and no C{maxRetries}.)

Several receivers
-----------------

C{--connect} may be given more than once.  The connector then holds the
endpoints in a ring: after an attempt fails or an established connection
is lost, the next attempt goes to the next endpoint.  A failed attempt
moves on to the next endpoint at once while some endpoint of the round is
still untried; only when a whole round has failed does the factory hear of
it, so its backoff (and C{maxRetries}) count full rounds.  A lost
connection is reported to the factory as before (its delay was reset on
WELCOME, so the next receiver is tried after C{initialDelay}).  Nothing
else changes: the L{imageproto.sender.flow.FrameSender} resends every
unacknowledged frame of a finite source to whichever receiver answers.
"""

from __future__ import annotations

from functools import partial

from twisted.application.service import MultiService, Service
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from imageproto.common.reactor import defaultReactor
from imageproto.sender import sources

__all__ = [
    "CaptureService",
    "EndpointConnector",
    "SenderConnectionService",
    "SenderService",
]


class CaptureService(Service):
    """
    Reads, encodes and offers frames at a steady rate.

    A C{LoopingCall} drives the loop; each tick runs L{sources.grab} through
    C{runInThread} and waits for it, so captures never overlap and OpenCV
    never blocks the reactor.  Before reading from a finite source the tick
    first waits for C{sink.whenReady()}, so the file is read no faster than
    the network takes it.  A live source is read every tick and the sink
    drops what it cannot send.

    @param source: a frame source (see L{imageproto.sender.sources}).
    @param sink: the L{imageproto.sender.flow.FrameSender} (C{whenReady},
        C{frameCaptured}, C{sourceExhausted}, C{fail}).
    @param fps: frames per second; C{None} for the source's own rate
        (C{nativeFps()}), 0 for as fast as the pipeline goes.
    @param encoder: the L{sources.Encoder}.
    @param runInThread: C{f, *args -> Deferred}; by default the service runs
        a one-thread pool of its own, which keeps each capture handle on one
        thread and the reactor's shared pool free.
    @param clock: the C{IReactorTime} for the loop.
    @param count: stop after this many frames were taken by the sink (0: no
        limit).
    @param now: the wall clock capture times are read from (in the capture
        thread), C{time.time} by default; the sender's tap passes its
        skewed clock's when C{IMAGEPROTO_CLOCK_SKEW} is set.

    @ivar frames: frames the sink took.
    @ivar missedTicks: ticks skipped because a capture (or the wait for the
        network) outlasted its interval.
    """

    log = Logger()

    def __init__(
        self,
        source,
        sink,
        fps: float | None,
        encoder,
        runInThread=None,
        clock=None,
        count: int = 0,
        now=None,
    ) -> None:
        clock = defaultReactor(clock)
        self.now = now
        self.source = source
        self.sink = sink
        self.fps = fps
        self.encoder = encoder
        self.clock = clock
        self.count = count
        self.runInThread = runInThread
        self._pool = None
        self.frames = 0
        self.missedTicks = 0
        self._failing = False
        self._loop = LoopingCall.withCount(self._tick)
        self._loop.clock = clock
        self._opening = None
        self._waiting = None
        self._loopDone = None

    @property
    def interval(self) -> float:
        fps = self.fps if self.fps is not None else self.source.nativeFps()
        return 1.0 / fps if fps else 0.0

    def startService(self) -> None:
        Service.startService(self)
        if self.runInThread is None:
            self._pool = ThreadPool(1, 1, name="imageproto-capture")
            self._pool.start()
            self.runInThread = partial(deferToThreadPool, self.clock, self._pool)
        self._opening = self.runInThread(self.source.open)
        self._opening.addCallbacks(self._opened, self._openFailed)

    def _opened(self, _) -> None:
        self._opening = None
        if not self.running or self.sink.finished:
            return
        interval = self.interval
        self.log.info(
            "capturing from {source} at {rate}",
            source=self.source.description,
            rate=f"{1 / interval:.3g} fps" if interval else "full speed",
        )
        self._loopDone = self._loop.start(interval, now=True)
        self._loopDone.addErrback(self._loopFailed)

    def _openFailed(self, failure: Failure) -> None:
        self._opening = None
        if failure.check(sources.CaptureError):
            self.sink.fail(str(failure.value))
        else:
            self.log.failure("opening {source}", failure, source=self.source.description)
            self.sink.fail(f"cannot open {self.source.description}")

    def _tick(self, count: int):
        self.missedTicks += count - 1
        if self.source.live:
            return self._capture()
        d = self._waiting = self.sink.whenReady()
        d.addCallback(self._ready)
        d.addErrback(lambda f: f.trap(CancelledError))
        return d

    def _ready(self, _):
        self._waiting = None
        return self._capture()

    def _capture(self) -> Deferred:
        if self.now is None:
            d = self.runInThread(sources.grab, self.source, self.encoder)
        else:
            d = self.runInThread(sources.grab, self.source, self.encoder, self.now)
        d.addCallbacks(self._captured, self._captureFailed)
        return d

    def _captured(self, captured) -> None:
        if captured is None:
            self._end(f"the end of {self.source.description}")
            return
        if self._failing:
            self._failing = False
            self.log.info("{source} delivers frames again", source=self.source.description)
        if self.sink.frameCaptured(captured.jpeg, captured.captureTime):
            self.frames += 1
            if self.count and self.frames >= self.count:
                self._end(f"{self.frames} frames (--count)")

    def _captureFailed(self, failure: Failure):
        failure.trap(sources.CaptureError)
        # A camera that went away fails every tick: warn once, not at 30 Hz.
        # Each unreadable file of a finite source is worth its own warning.
        quiet = self._failing and self.source.live
        level = self.log.debug if quiet else self.log.warn
        self._failing = True
        level("{source}: {error}", source=self.source.description, error=str(failure.value))

    def _end(self, why: str) -> None:
        self.log.info("capture finished after {why}", why=why)
        if self._loop.running:
            self._loop.stop()
        self.sink.sourceExhausted()

    def _loopFailed(self, failure: Failure) -> None:
        self.log.failure("the capture loop crashed", failure)
        self.sink.fail("the capture loop crashed: " + failure.getErrorMessage())

    @inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        if self._waiting is not None:
            self._waiting.cancel()
        if self._opening is not None:
            yield self._opening
        if self._loop.running:
            self._loop.stop()
        if self._loopDone is not None:
            yield self._loopDone
        try:
            yield self.runInThread(self.source.close)
        finally:
            if self._pool is not None:
                self._pool.stop()
                self._pool = None
                self.runInThread = None


class _LossReporter(ProtocolWrapper):
    """
    Passes everything through, and tells the connector when the connection
    is lost (endpoints, unlike connectors, tell the factory nothing).
    """

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.factory.connector._lost(reason)


class _ReportingFactory(WrappingFactory):
    protocol = _LossReporter
    noisy = False

    def __init__(self, wrappedFactory, connector) -> None:
        super().__init__(wrappedFactory)
        self.connector = connector


class EndpointConnector:
    """
    An C{IConnector} over one or more client endpoints, so that a
    C{ReconnectingClientFactory} can drive retries through any endpoint, and
    move between receivers in turn (see the module docstring).

    @param endpoint: an C{IStreamClientEndpoint}, or a sequence of them to
        be tried in turn.
    @param factory: the client factory; it hears C{clientConnectionFailed}
        (once per failed round) and C{clientConnectionLost} with this
        connector.
    @param destination: the endpoint string (or one per endpoint), for log
        lines.
    """

    log = Logger()

    def __init__(self, endpoint, factory, destination) -> None:
        if isinstance(destination, str):
            endpoints, destinations = [endpoint], [destination]
        else:
            endpoints, destinations = list(endpoint), list(destination)
        if not endpoints or len(endpoints) != len(destinations):
            raise ValueError("one destination per endpoint, at least one")
        self.endpoints = endpoints
        self.destinations = destinations
        self.factory = factory
        self._index = 0
        # Attempts failed since the round began (a connection or a call
        # from the factory begins one).
        self._failedInRound = 0
        self._wrapping = _ReportingFactory(factory, self)
        self._attempt = None
        self._connection = None
        self._lossWaiters: list[Deferred] = []

    def __repr__(self) -> str:
        return f"<EndpointConnector {self.destination}>"

    @property
    def endpoint(self):
        """
        The endpoint of the current (or next) attempt.
        """
        return self.endpoints[self._index]

    @property
    def destination(self) -> str:
        """
        The endpoint string of the current (or next) attempt.
        """
        return self.destinations[self._index]

    def connect(self) -> None:
        if self._attempt is not None or self._connection is not None:
            return
        self._failedInRound = 0
        self._connectCurrent()

    def _connectCurrent(self) -> None:
        self.factory.startedConnecting(self)
        self._attempt = self.endpoint.connect(self._wrapping)
        self._attempt.addCallbacks(self._connected, self._failed)

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self.endpoints)

    def _connected(self, wrapper) -> None:
        self._attempt = None
        self._connection = wrapper

    def _failed(self, reason: Failure) -> None:
        self._attempt = None
        failedAt = self.destination
        self._advance()
        self._failedInRound += 1
        if (
            self._failedInRound < len(self.endpoints)
            and getattr(self.factory, "continueTrying", True)
            and not reason.check(CancelledError)
        ):
            # Some receiver of this round is untried: no backoff yet.
            self.log.info(
                "{failed}: {reason}; trying {destination}",
                failed=failedAt,
                reason=reason.getErrorMessage(),
                destination=self.destination,
            )
            self._connectCurrent()
            return
        self.factory.clientConnectionFailed(self, reason)
        self._notifyLoss()

    def _lost(self, reason: Failure) -> None:
        self._connection = None
        self._advance()
        self.factory.clientConnectionLost(self, reason)
        self._notifyLoss()

    def _notifyLoss(self) -> None:
        waiters, self._lossWaiters = self._lossWaiters, []
        for d in waiters:
            d.callback(None)

    def stopConnecting(self) -> None:
        if self._attempt is None:
            raise error.NotConnectingError()
        self._attempt.cancel()

    def disconnect(self) -> None:
        """
        Cancel a connection attempt, or close the connection once its
        buffered bytes (a BYE, say) are written.
        """
        if self._attempt is not None:
            self._attempt.cancel()
        elif self._connection is not None:
            self._connection.loseConnection()

    def abort(self) -> None:
        """
        Close the connection now, discarding what is buffered.
        """
        if self._connection is not None:
            self._connection.abortConnection()

    def whenIdle(self) -> Deferred:
        """
        @return: a Deferred that fires once there is neither a connection
            nor an attempt (at once if there is none now).
        """
        d = Deferred()
        if self._attempt is None and self._connection is None:
            d.callback(None)
        else:
            self._lossWaiters.append(d)
        return d

    def getDestination(self):
        return self.endpoint


class SenderConnectionService(Service):
    """
    Keeps a L{imageproto.protocol.factories.SenderFactory} connected through an
    endpoint, or through one of several in turn.

    Stopping says BYE if a stream is up, calls C{stopTrying()} before
    disconnecting (or the disconnection would schedule a retry), and waits
    up to C{closeTimeout} seconds for buffered bytes to be written.

    @param endpoint: the client endpoint, or a sequence of them (see
        L{EndpointConnector}).
    @param factory: the L{imageproto.protocol.factories.SenderFactory}.
    @param destination: the endpoint string (or a list, one per endpoint),
        for log lines.
    @param clock: the C{IReactorTime} for the close timeout.
    """

    log = Logger()

    def __init__(self, endpoint, factory, destination, clock, closeTimeout: float = 5.0) -> None:
        self.factory = factory
        self.clock = clock
        self.closeTimeout = closeTimeout
        self.connector = EndpointConnector(endpoint, factory, destination)

    def startService(self) -> None:
        Service.startService(self)
        self.log.info(
            "connecting to {destination}",
            destination=" or ".join(self.connector.destinations),
        )
        self.connector.connect()

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self.factory.stopTrying()
        sender = self.factory.sender
        if sender.protocol is not None and not sender.finished:
            sender.protocol.sayGoodbye("sender stopping")
        idle = self.connector.whenIdle()
        self.connector.disconnect()
        if idle.called:
            return idle
        timeout = self.clock.callLater(self.closeTimeout, self.connector.abort)
        idle.addBoth(lambda r: timeout.cancel() if timeout.active() else None)
        return idle


class SenderService(MultiService):
    """
    One run of the sender: a L{SenderConnectionService} and a
    L{CaptureService} around one L{imageproto.sender.flow.FrameSender}.

    When the sender is done (everything delivered) or fails for good,
    C{onExit} is called with the process's exit status: 0 for done, 1 for a
    failure.  In production it stops the reactor (see
    L{imageproto.tap.sender}).

    @param sender: the L{imageproto.sender.flow.FrameSender}.
    @param connection: the L{SenderConnectionService}.
    @param capture: the L{CaptureService}.
    @param onExit: C{int -> None}.
    """

    def __init__(self, sender, connection, capture, onExit) -> None:
        super().__init__()
        self.sender = sender
        self.onExit = onExit
        self.exitCode = None
        # MultiService stops children in reverse: capture first, so no
        # frame is offered to a connection that is closing.
        connection.setServiceParent(self)
        capture.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.sender.whenDone().addCallbacks(lambda _: self._exit(0), lambda f: self._exit(1))

    def _exit(self, code: int) -> None:
        self.exitCode = code
        self.onExit(code)

    def stopService(self):
        if not self.sender.finished:
            self.sender.logSummary("stopped early")
        return super().stopService()
