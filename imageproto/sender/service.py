# -*- test-case-name: tests.test_services -*-
"""
The sender's services: the capture loop, the reconnecting client connection,
and the L{SenderService} that ties them to a L{FrameSender} and ends the run.

The connection to the receivers (failover included) is in
L{imageproto.sender.connection}.
"""

from __future__ import annotations

from functools import partial

from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from imageproto.common.reactor import defaultReactor
from imageproto.sender import sources

from imageproto.sender.connection import EndpointConnector, SenderConnectionService

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
