# -*- test-case-name: tests.test_bus -*-
"""
C{twistd imageproto-worker}'s detecting service: L{WorkerService} runs one
L{imageproto.features.bus.worker.WorkerLoop} per worker thread against one
Redis server, and the detector over them.
"""

from __future__ import annotations

from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from imageproto.common.reactor import defaultReactor
from imageproto.features.bus.worker import WorkerLoop
from imageproto.features.bus.workerconfig import WorkerConfig

__all__ = ["WorkerService"]


class WorkerService(Service):
    """
    Runs C{config.workers} L{WorkerLoop}s in threads of its own and keeps
    their totals.

    @param makeLoop: C{makeLoop(index)} builds loop C{index} (tests pass
        fakes); by default a L{WorkerLoop} over one shared redis-py client.
    """

    log = Logger()

    def __init__(self, config: WorkerConfig, reactor=None, makeLoop=None, runInThread=None) -> None:
        self.config = config
        self.reactor = reactor = defaultReactor(reactor)
        self._pool = None
        if runInThread is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=config.workers, name="bus-worker")
            runInThread = partial(deferToThreadPool, reactor, self._pool)
        self.runInThread = runInThread
        self._makeLoop = makeLoop or self._defaultLoop
        self._client = None
        self.totals = {"processed": 0, "skipped": 0, "claimed": 0, "failed": 0, "malformed": 0}
        self._running: list[Deferred] = []
        self._waiting: dict = {}
        self._healthy = True

    def _defaultLoop(self, index: int) -> WorkerLoop:
        from imageproto.features.bus.link import connect
        from imageproto.features.inference.engine import FrameProcessor

        if self._client is None:
            self._client = connect(self.config.url)
            self._processor = FrameProcessor(self.config.detector)
        return WorkerLoop(
            self._client,
            self._processor,
            consumer=f"{self.config.name}-{index}",
            worker=self.config.name,
            group=self.config.group,
            claimAfter=self.config.claimAfter,
            maxAge=self.config.maxAge,
        )

    def startService(self) -> None:
        super().startService()
        if self._pool is not None:
            self._pool.start()
        self.log.info(
            "worker {name}: detector {detector} in {workers} threads, group {group}, "
            "claiming after {claimAfter} s, skipping live frames older than {maxAge} s",
            name=self.config.name,
            detector=getattr(self.config.detector, "name", self.config.detector),
            workers=self.config.workers,
            group=self.config.group,
            claimAfter=self.config.claimAfter,
            maxAge=self.config.maxAge,
        )
        for index in range(self.config.workers):
            done = Deferred()
            self._running.append(done)
            self._drive(self._makeLoop(index), done, 0.05)

    def _later(self, delay: float, loop, done: Deferred, nextDelay: float) -> None:
        self._waiting[done] = self.reactor.callLater(
            delay, self._drive, loop, done, nextDelay
        )

    def _drive(self, loop, done: Deferred, delay: float) -> None:
        self._waiting.pop(done, None)
        if not self.running:
            if not done.called:
                done.callback(None)
            return
        d = self.runInThread(loop.step)

        def stepped(counts):
            if not self._healthy:
                self.log.info("worker {name}: Redis is back", name=self.config.name)
            self._healthy = True
            for name in self.totals:
                self.totals[name] += counts.get(name, 0)
            for error in counts.get("errors", ()):
                self.log.warn("worker {name}: {error}", name=self.config.name, error=error)
            if counts.get("claimed"):
                self.log.info(
                    "worker {name}: claimed {count} frames another worker held",
                    name=self.config.name,
                    count=counts["claimed"],
                )
            if counts.get("idle") and not loop.keys:
                # Nothing to read from yet: look again shortly.
                self._later(0.2, loop, done, 0.05)
            else:
                self._drive(loop, done, 0.05)

        def failed(failure):
            if self._healthy:
                self.log.error(
                    "worker {name}: bus failed ({error}); retrying",
                    name=self.config.name,
                    error=failure.getErrorMessage(),
                )
            self._healthy = False
            self._later(delay, loop, done, min(delay * 2, 1.0))

        d.addCallbacks(stepped, failed)

    def stopService(self):
        super().stopService()
        running, self._running = self._running, []
        waiting, self._waiting = self._waiting, {}
        for done, call in waiting.items():
            if call.active():
                call.cancel()
            if not done.called:
                done.callback(None)

        def stopped(_):
            if self._pool is not None:
                self._pool.stop()
            if self._client is not None:
                self._client.close()
            self.log.info(
                "worker {name}: {processed} frames processed, {skipped} stale live "
                "frames skipped, {claimed} claimed, {failed} failed",
                name=self.config.name,
                **self.totals,
            )

        return DeferredList(running).addCallback(stopped)
