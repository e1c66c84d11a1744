# -*- test-case-name: tests.test_inference -*-
"""
Run a detector over received frames in a bounded pool of worker threads,
never on the reactor, and turn its answers into RESULT messages.

Scheduling, decided on the reactor thread by L{InferenceEngine}:

  - At most C{workers} frames are being processed at once, taken from the
    streams with waiting frames in turn.
  - A I{live} stream (its HELLO carried C{CAP_LIVE}) keeps at most one
    waiting frame: a newer frame replaces it, the replaced one is counted as
    skipped and gets no RESULT.  The detector therefore always works on the
    newest frame it can.
  - A I{finite} stream (a video file, an image folder) has every frame
    processed in order.  When more than C{maxQueued} of its frames wait, the
    engine pauses reading from that connection (TCP pushes back on the
    sender) and resumes once half have been worked off.
  - Results of one stream are delivered in the order its frames started,
    even when two workers finish out of order.
  - A detector that marks itself C{serial} (per-stream state, such as
    C{motion}) runs one frame per stream at a time.

The thread side (L{imageproto.features.inference.processor.FrameProcessor})
builds one detector per worker thread.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from imageproto import wire
from imageproto.features.inference.processor import Processed

__all__ = ["REPLY_MODES", "InferenceStats", "InferenceEngine"]

REPLY_MODES = ("none", "detections", "annotated")


@frozen
class InferenceStats:
    """
    Counters for one stream.

    @ivar skipped: live frames replaced by a newer one before a worker was
        free; they got no RESULT.
    @ivar failed: frames the detector raised on (answered with an empty
        RESULT).
    """

    processed: int = 0
    skipped: int = 0
    failed: int = 0
    queued: int = 0


@define(eq=False)
class _Item:
    stream: str
    frame: wire.Frame
    annotated: bool
    alive: Callable[[], bool]
    deferred: Deferred = field(factory=Deferred)
    result: object = None
    done: bool = False


@define(eq=False)
class _Queue:
    key: object
    live: bool
    flow: object = None
    pending: deque = field(factory=deque)
    started: deque = field(factory=deque)
    running: int = 0
    ready: bool = False
    paused: bool = False


class InferenceEngine:
    """
    Decides which frames the detector sees and when; see the module
    docstring.  Used from the reactor thread only.

    @param processor: called in a worker thread as C{processor(stream, jpeg,
        annotated)}, returning a L{Processed}.
    @param runInThread: C{runInThread(f, *args)} returns a Deferred of
        C{f(*args)} run in a worker thread.
    @param workers: frames processed at once; match the thread pool.
    @param reply: the default for C{annotated}: C{"annotated"} asks for the
        marked-up frame.
    @param serial: run each stream's frames one at a time.
    @param maxQueued: waiting frames of a finite stream before its
        connection is paused.
    """

    log = Logger()

    def __init__(
        self,
        processor: Callable,
        runInThread: Callable,
        workers: int = 1,
        reply: str = "detections",
        serial: bool = False,
        maxQueued: int = 32,
    ) -> None:
        if reply not in REPLY_MODES:
            raise ValueError(f"reply must be one of {REPLY_MODES}")
        self.processor = processor
        self.runInThread = runInThread
        self.workers = workers
        self.reply = reply
        self.serial = serial
        self.maxQueued = maxQueued
        self._queues: dict = {}
        self._ready: deque = deque()
        self._running = 0
        self._counts: dict = {}

    @property
    def running(self) -> int:
        """
        Frames being processed in worker threads now.
        """
        return self._running

    def submit(
        self,
        stream: str,
        frame: wire.Frame,
        live: bool = False,
        key: object = None,
        flow=None,
        alive: Callable[[], bool] = lambda: True,
        annotated: bool | None = None,
    ) -> Deferred:
        """
        Queue C{frame} for the detector.

        @param stream: the stream name, handed to the detector.
        @param live: skip this frame if a newer one arrives first.
        @param key: what frames are queued by (one connection); defaults to
            C{stream}.
        @param flow: an C{IPushProducer} (the connection's transport) to
            pause while too many frames of a finite stream wait.
        @param alive: called before the frame starts; C{False} (the peer has
            gone) drops the frame unprocessed.
        @param annotated: ask for the marked-up JPEG; defaults to C{reply ==
            "annotated"}.
        @return: a Deferred firing with a L{wire.Result}, or C{None} when
            the frame was skipped or dropped.
        """
        if annotated is None:
            annotated = self.reply == "annotated"
        key = stream if key is None else key
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key, live, flow)
        item = _Item(stream, frame, annotated, alive)
        if live:
            while queue.pending:
                stale = queue.pending.popleft()
                self._count(stream, "skipped")
                self.log.debug(
                    "skipped stale frame {seq} of {stream}",
                    seq=stale.frame.seq,
                    stream=stream,
                )
                stale.deferred.callback(None)
        queue.pending.append(item)
        if (
            not live
            and flow is not None
            and not queue.paused
            and len(queue.pending) >= self.maxQueued
        ):
            queue.paused = True
            flow.pauseProducing()
        self._schedule(queue)
        self._pump()
        return item.deferred

    def stats(self, stream: str) -> InferenceStats:
        """
        Counters for the frames of stream C{stream} since the engine started.
        """
        counts = self._counts.get(stream, {})
        queued = sum(
            len(q.pending) for q in self._queues.values()
            if q.pending and q.pending[0].stream == stream
        )
        return InferenceStats(queued=queued, **counts)

    def totals(self) -> InferenceStats:
        """
        Counters over every stream since the engine started.
        """
        summed = {"processed": 0, "skipped": 0, "failed": 0}
        for counts in self._counts.values():
            for name, value in counts.items():
                summed[name] += value
        queued = sum(len(q.pending) for q in self._queues.values())
        return InferenceStats(queued=queued, **summed)

    def _count(self, stream: str, what: str) -> None:
        counts = self._counts.setdefault(
            stream, {"processed": 0, "skipped": 0, "failed": 0}
        )
        counts[what] += 1

    def _schedule(self, queue: _Queue) -> None:
        if queue.ready or not queue.pending:
            return
        if self.serial and queue.running:
            return
        queue.ready = True
        self._ready.append(queue)

    def _pump(self) -> None:
        while self._running < self.workers and self._ready:
            queue = self._ready.popleft()
            queue.ready = False
            item = queue.pending.popleft()
            self._resume(queue)
            if not item.alive():
                item.deferred.callback(None)
                self._schedule(queue)
                self._forget(queue)
                continue
            self._running += 1
            queue.running += 1
            queue.started.append(item)
            d = self.runInThread(
                self.processor, item.stream, item.frame.jpeg, item.annotated
            )
            d.addBoth(self._finished, queue, item)
            # Round robin: a stream with more waiting goes to the back.
            self._schedule(queue)

    def _resume(self, queue: _Queue) -> None:
        if queue.paused and len(queue.pending) <= self.maxQueued // 2:
            queue.paused = False
            queue.flow.resumeProducing()

    def _finished(self, outcome, queue: _Queue, item: _Item) -> None:
        self._running -= 1
        queue.running -= 1
        seq = item.frame.seq
        if isinstance(outcome, Processed):
            self._count(item.stream, "processed")
            self.log.debug(
                "frame {seq} of {stream}: {count} detections in {micros} us",
                seq=seq,
                stream=item.stream,
                count=len(outcome.detections),
                micros=outcome.micros,
            )
            result = outcome.toResult(seq)
            if result is None:
                self._count(item.stream, "failed")
                self.log.error(
                    "detections for frame {seq} of {stream} cannot be sent as JSON",
                    seq=seq,
                    stream=item.stream,
                )
                result = wire.Result(seq)
        else:
            self._count(item.stream, "failed")
            self.log.failure(
                "detector failed on frame {seq} of {stream}",
                outcome,
                seq=seq,
                stream=item.stream,
            )
            result = wire.Result(seq)
        item.result = result
        item.done = True
        while queue.started and queue.started[0].done:
            ready = queue.started.popleft()
            ready.deferred.callback(ready.result)
        self._schedule(queue)
        self._forget(queue)
        self._pump()

    def _forget(self, queue: _Queue) -> None:
        # An idle queue holds nothing but counters, which live per stream
        # name in _counts: drop it so that connections come and go freely.
        if not queue.pending and not queue.running and not queue.started:
            if self._queues.get(queue.key) is queue:
                del self._queues[queue.key]
