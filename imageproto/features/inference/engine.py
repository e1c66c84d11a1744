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

The thread side (L{FrameProcessor}) builds one detector per worker thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import partial
from typing import Callable

from attrs import define, field, frozen
from attrs.validators import ge, in_
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from zope.interface import implementer

from imageproto import wire
from imageproto.receiver.pipeline import ConsumerBase, IFrameConsumer
from imageproto.features.inference.detectors import DetectorSpec, annotate, decodeImage, encodeImage

__all__ = [
    "REPLY_MODES",
    "FrameProcessor",
    "Processed",
    "InferenceStats",
    "InferenceEngine",
    "InferenceService",
    "InferenceConsumer",
    "InferenceConfig",
    "attachInference",
]

REPLY_MODES = ("none", "detections", "annotated")
_U32 = 0xFFFFFFFF


@frozen
class Processed:
    """
    What a worker thread hands back for one frame.

    @ivar jpeg: the marked-up frame, or C{b""} when not asked for.
    """

    detections: list
    micros: int
    jpeg: bytes = field(repr=False, default=b"")


class FrameProcessor:
    """
    The thread side: decode, detect, draw, encode.  Called only from worker
    threads; each thread gets its own detector instance.
    """

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self._local = threading.local()

    def _detector(self):
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self.spec.factory()
        return detector

    def __call__(self, stream: str, jpeg: bytes, annotated: bool) -> Processed:
        started = time.perf_counter()
        if self.spec.echo:
            # Nothing to find: skip decoding, send the frame back as it came.
            return Processed([], _micros(started), jpeg if annotated else b"")
        image = decodeImage(jpeg)
        detections = self._detector().detect(image, stream)
        out = encodeImage(annotate(image, detections)) if annotated else b""
        return Processed(list(detections), _micros(started), out)


def _micros(started: float) -> int:
    return min(int((time.perf_counter() - started) * 1e6), _U32)


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
            result = _toResult(seq, outcome)
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


def _toResult(seq: int, processed: Processed) -> wire.Result | None:
    try:
        result = wire.Result(
            seq, list(processed.detections), processed.micros, processed.jpeg
        )
        wire.encodeMessage(result)
    except (TypeError, ValueError):
        return None
    return result


@implementer(IFrameConsumer)
class InferenceConsumer(ConsumerBase):
    """
    The detector as a consumer of the receiver's pipeline: queues each frame
    on an L{InferenceEngine} and answers it with the RESULT when it is done.
    The ACK does not wait for the detector.  A finite stream's backlog
    pauses reading from its connection; a live stream's stale frames are
    skipped and get no answer.

    @param engine: the L{InferenceEngine}.
    @param reply: C{"detections"} or C{"annotated"} sends RESULTs to senders
        that take them; C{"none"} only shows them (in the viewer).
    """

    log = Logger()
    # Frames get an answer from this consumer (see FramePipeline.answers).
    answers = True

    def __init__(self, engine: InferenceEngine, reply: str = "detections") -> None:
        if reply not in REPLY_MODES:
            raise ValueError(f"reply must be one of {REPLY_MODES}")
        self.engine = engine
        self.reply = reply

    def frameReceived(self, frame) -> None:
        channel = frame.channel
        wantsImage = bool(getattr(channel, "wantsImage", False))
        d = self.engine.submit(
            frame.stream,
            frame,
            live=frame.live,
            key=channel if channel is not None else frame.stream,
            flow=None if channel is None else _ChannelFlow(channel),
            alive=channel.isOpen if channel is not None else (lambda: True),
            annotated=self.reply == "annotated" or wantsImage,
        )
        toSender = self.reply != "none" or wantsImage

        def answered(result):
            if result is not None:
                frame.reply(result, toSender)

        d.addCallback(answered).addErrback(
            lambda f: self.log.failure(
                "RESULT for frame {seq} of {stream} not delivered",
                f,
                seq=frame.seq,
                stream=frame.stream,
            )
        )


class _ChannelFlow:
    """
    Lets the detector's backlog pause reading from a frame's connection,
    beside the connection's other reasons to pause.
    """

    def __init__(self, channel) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        self._channel.pauseReading("inference")

    def resumeProducing(self) -> None:
        self._channel.resumeReading("inference")


class InferenceService(Service):
    """
    Owns the worker thread pool and the L{InferenceEngine} over it.

    @ivar engine: set once the service has started; C{submit} frames to it.
    """

    log = Logger()

    def __init__(
        self,
        spec: DetectorSpec,
        workers: int = 1,
        reply: str = "detections",
        reactor=None,
        maxQueued: int = 32,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.spec = spec
        self.reply = reply
        self.workers = workers
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=workers, name="inference")
        self.engine = InferenceEngine(
            FrameProcessor(spec),
            partial(deferToThreadPool, reactor, self._pool),
            workers=workers,
            reply=reply,
            serial=spec.serial,
            maxQueued=maxQueued,
        )
        self.consumer = InferenceConsumer(self.engine, reply)

    def startService(self) -> None:
        super().startService()
        self._pool.start()
        self.log.info(
            "detector {name} running in {workers} worker threads, replying {reply}",
            name=self.spec.name,
            workers=self.workers,
            reply=self.reply,
        )

    def stopService(self):
        super().stopService()
        totals = self.engine.totals()
        self.log.info(
            "detector {name}: {processed} frames processed, {skipped} stale "
            "live frames skipped, {failed} failed",
            name=self.spec.name,
            processed=totals.processed,
            skipped=totals.skipped,
            failed=totals.failed,
        )
        self._pool.stop()


@frozen
class InferenceConfig:
    """
    Run a detector over every received frame.

    @ivar detector: the checked L{DetectorSpec}.
    @ivar workers: worker threads (frames processed at once).
    @ivar reply: what goes back to senders, one of L{REPLY_MODES}.
    """

    detector: DetectorSpec
    workers: int = field(default=1, validator=ge(1))
    reply: str = field(default="detections", validator=in_(REPLY_MODES))


def attachInference(receiver, config: InferenceConfig) -> InferenceService:
    """
    Add the detector to an L{imageproto.receiver.service.ReceiverService}
    as one more consumer of its pipeline, in a child service owning the
    worker threads, and announce its RESULTs in WELCOME.
    """
    service = InferenceService(
        config.detector,
        workers=config.workers,
        reply=config.reply,
        reactor=receiver.reactor,
    )
    service.setServiceParent(receiver)
    receiver.addConsumer(service.consumer)
    if config.reply != "none":
        receiver.advertise(wire.SCAP_DETECT)
    if config.reply == "annotated":
        receiver.advertise(wire.SCAP_ANNOTATED)
    return service
