# -*- test-case-name: tests.test_receiver -*-
"""
L{StatsReporter}: the receiver's statistics, logged every C{--stats-interval}
seconds and written to C{--stats-file} every second and at shutdown.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from imageproto.common.files import writeJsonAtomically
from imageproto.receiver.registry import StreamRegistry

__all__ = ['StatsReporter']


_LOGGED = (
    "fps",
    "frames",
    "bytes",
    "gaps",
    "dropped",
    "rejected",
    "storage_errors",
    "duplicates",
    "reconnects",
)


class StatsReporter(Service):
    """
    Logs every stream's statistics every C{logInterval} seconds and, given
    C{statsFile}, writes L{StreamRegistry.snapshot} there as JSON every
    C{fileInterval} seconds and once more at shutdown.

    @param runInThread: runs the file writes off the reactor.
    """

    log = Logger()

    def __init__(
        self,
        registry: StreamRegistry,
        clock,
        runInThread: Callable[..., Deferred],
        logInterval: float = 5.0,
        statsFile: str | None = None,
        fileInterval: float = 1.0,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.runInThread = runInThread
        self.logInterval = logInterval
        self.statsFile = statsFile
        self.fileInterval = fileInterval
        self._loops: list[LoopingCall] = []

    def logStats(self) -> None:
        streams = self.registry.snapshot()["streams"]
        if not streams:
            self.log.info("no streams yet")
        for name, stats in streams.items():
            self.log.info(
                "stream {stream}: {state}, {fps} fps, {frames} frames, {bytes} "
                "bytes, latency p50 {p50} ms p95 {p95} ms p99 {p99} ms, gaps "
                "{gaps}, dropped {dropped}, rejected {rejected} (storage errors "
                "{storage_errors}), duplicates "
                "{duplicates}, reconnects {reconnects}",
                stream=name,
                state="connected" if stats["connected"] else "disconnected",
                p50=stats["latency_ms"]["p50"],
                p95=stats["latency_ms"]["p95"],
                p99=stats["latency_ms"]["p99"],
                stats=stats,
                **{k: stats[k] for k in _LOGGED},
            )

    def writeStats(self) -> Deferred:
        """
        Write the stats file now (in a worker thread).

        @return: a L{Deferred} that fires when it is written; a failure is
            logged, not raised, so the periodic writes continue.
        """
        if self.statsFile is None:
            return succeed(None)
        d = self.runInThread(writeJsonAtomically, self.statsFile, self.registry.snapshot())
        d.addErrback(
            lambda f: self.log.failure(
                "could not write statistics to {path}", f, path=self.statsFile
            )
        )
        return d

    def _every(self, interval: float, f: Callable, now: bool) -> None:
        loop = LoopingCall(f)
        loop.clock = self.clock
        loop.start(interval, now=now)
        self._loops.append(loop)

    def startService(self) -> None:
        super().startService()
        if self.logInterval > 0:
            self._every(self.logInterval, self.logStats, now=False)
        if self.statsFile is not None:
            self._every(self.fileInterval, self.writeStats, now=True)

    def stopService(self) -> Deferred:
        super().stopService()
        loops, self._loops = self._loops, []
        waits = []
        for loop in loops:
            # Taken before stop(), which clears it; it fires once a write in
            # progress has finished.
            waits.append(loop.deferred)
            if loop.running:
                loop.stop()
        # Let a write in progress finish before the final one replaces it.
        d = succeed(None)
        for wait in waits:
            d.addCallback(lambda _, w=wait: w)
        d.addCallback(lambda _: self.writeStats())
        return d
