# -*- test-case-name: tests.test_recorder -*-
"""
Recording streams as segmented video files.

L{Recorder} is an L{IFrameSink} and a service.  In the reactor thread it only
puts frames on a bounded queue (counting any it must drop), so a slow disk
never stalls receiving.  One worker thread takes them off, decodes each JPEG
and writes it with C{cv2.VideoWriter} into an MJPG AVI of at most
C{segmentSeconds}, named for the stream and the segment's start time (UTC)::

    DIR/<stream>-20250101T120000Z.avi

MJPG in AVI is written and read back by OpenCV's own MJPEG codec, which every
OpenCV build has (no FFmpeg needed), so recordings play anywhere.

A stream's file is finished (C{release()}) when the stream stops, and
C{stopService} waits until every queued frame is written and every file is
finished, so a recording is always playable and holds every frame that was
queued for it.
"""

from __future__ import annotations

import os
import queue
import re
import time
from functools import partial
from typing import Callable

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from imageproto.receiver.consumers import IFrameSink

__all__ = [
    "Recorder",
    "segmentName",
    "DEFAULT_SEGMENT_SECONDS",
    "RecordingConfig",
    "attachRecording",
]

DEFAULT_SEGMENT_SECONDS = 300.0
DEFAULT_MAX_QUEUED = 120
_FALLBACK_FPS = 10.0
_MIN_FPS, _MAX_FPS = 1.0, 120.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def segmentName(stream: str, start: float) -> str:
    """
    The file name of a segment of C{stream} beginning at C{start} (seconds
    since the epoch): the stream name with any character other than letters,
    digits, C{.}, C{_} and C{-} replaced by C{_}, then the UTC start time.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
    return f"{_UNSAFE.sub('_', stream).lstrip('.') or '_'}-{stamp}.avi"


def _openVideo(path: str, fps: float, size: tuple[int, int]):
    """
    Open an MJPG AVI writer; runs in the worker thread.
    """
    import cv2

    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    writer = cv2.VideoWriter(path, cv2.CAP_OPENCV_MJPEG, fourcc, fps, size)
    if not writer.isOpened():
        writer = cv2.VideoWriter(path, fourcc, fps, size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot open {path!r} for writing")
    return writer


def _decode(jpeg: bytes):
    import cv2
    import numpy

    image = cv2.imdecode(numpy.frombuffer(jpeg, numpy.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable JPEG")
    return image


@frozen
class _FrameJob:
    stream: str
    seq: int
    receiveTime: float
    jpeg: bytes = field(repr=False)
    fpsHint: float | None


@frozen
class _CloseJob:
    stream: str


_STOP = object()


@define
class _StreamCounts:
    """
    One stream's recording counts.  C{queued} and C{dropped} are changed
    only in the reactor thread; C{written}, C{segments} and C{file} only in
    the worker thread (reading a Python int from the other thread is safe).
    """

    queued: int = 0
    dropped: int = 0
    written: int = 0
    failed: int = 0
    segments: int = 0
    file: str | None = None
    lastCapture: float | None = None
    interval: float | None = None

    def asDict(self) -> dict:
        return {
            "queued": self.queued,
            "dropped": self.dropped,
            "written": self.written,
            "failed": self.failed,
            "segments": self.segments,
            "file": self.file,
        }


@define
class _Segment:
    """
    The open file of one stream; touched only in the worker thread.
    """

    path: str
    start: float
    size: tuple[int, int]
    writer: object
    frames: int = 0


@implementer(IFrameSink)
class Recorder(Service):
    """
    Records every stream into segmented MJPG AVI files off the reactor.

    @param directory: where the files go (created when the service starts).
    @param segmentSeconds: the longest span of receive time one file holds.
    @param maxQueued: frames that may wait for the writer, over all streams;
        frames beyond it are dropped and counted.
    @param runInThread: C{f(callable) -> Deferred} running the writer loop in
        a thread; by default a one-thread pool this service starts and stops.
    @param openVideo: C{f(path, fps, (width, height))} returning an object
        with C{write(image)} and C{release()}; called in the worker thread.
    @param decode: C{f(jpeg) -> image}; called in the worker thread.
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        segmentSeconds: float = DEFAULT_SEGMENT_SECONDS,
        maxQueued: int = DEFAULT_MAX_QUEUED,
        runInThread: Callable[..., Deferred] | None = None,
        openVideo: Callable = _openVideo,
        decode: Callable = _decode,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.segmentSeconds = segmentSeconds
        self.maxQueued = maxQueued
        self._runInThread = runInThread
        self._openVideo = openVideo
        self._decode = decode
        # Unbounded as a structure: only the reactor thread puts, and it
        # checks the bound first, so the STOP marker always fits.
        self._queue: queue.Queue = queue.Queue()
        self._counts: dict[str, _StreamCounts] = {}
        self._segments: dict[str, _Segment] = {}
        self._held: dict[str, _FrameJob] = {}
        self._accepting = False
        self._pool: ThreadPool | None = None
        self._done: Deferred | None = None

    def _countsFor(self, stream: str) -> _StreamCounts:
        counts = self._counts.get(stream)
        if counts is None:
            counts = self._counts[stream] = _StreamCounts()
        return counts

    # IFrameSink, reactor thread

    def frameReceived(self, frame) -> None:
        counts = self._countsFor(frame.stream)
        if counts.lastCapture is not None:
            step = frame.captureTime - counts.lastCapture
            if step > 0:
                counts.interval = (
                    step if counts.interval is None else 0.8 * counts.interval + 0.2 * step
                )
        counts.lastCapture = frame.captureTime
        if not self._accepting or self._queue.qsize() >= self.maxQueued:
            counts.dropped += 1
            self.log.debug(
                "recorder dropped frame {seq} of {stream}",
                seq=frame.seq,
                stream=frame.stream,
            )
            return None
        counts.queued += 1
        hint = 1.0 / counts.interval if counts.interval else None
        self._queue.put(
            _FrameJob(frame.stream, frame.seq, frame.receiveTime, frame.jpeg, hint)
        )
        return None

    def streamStarted(self, name: str) -> None:
        pass

    def streamStopped(self, name: str) -> None:
        if self._accepting:
            self._queue.put(_CloseJob(name))

    def close(self) -> None:
        return None

    def stats(self) -> dict:
        """
        C{{stream: {"queued", "dropped", "written", "failed", "segments",
        "file"}}}: frames put on the queue, dropped because it was full (or
        the recorder was stopped), written, undecodable, files begun, and the
        file being written now.
        """
        return {name: c.asDict() for name, c in sorted(self._counts.items())}

    # Service

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.directory, exist_ok=True)
        runInThread = self._runInThread
        if runInThread is None:
            from twisted.internet import reactor

            self._pool = ThreadPool(1, 1, "imageproto-recorder")
            self._pool.start()
            runInThread = partial(deferToThreadPool, reactor, self._pool)
        self._accepting = True
        self._done = runInThread(self.run)
        self._done.addErrback(
            lambda f: self.log.failure("the recorder's writer failed", f)
        )
        self.log.info(
            "recording to {directory} in segments of {seconds} s",
            directory=self.directory,
            seconds=self.segmentSeconds,
        )

    def stopService(self) -> Deferred:
        super().stopService()
        if not self._accepting:
            return succeed(None)
        self._accepting = False
        self._queue.put(_STOP)

        def finished(_):
            if self._pool is not None:
                self._pool.stop()
                self._pool = None
            for name, counts in sorted(self._counts.items()):
                self.log.info(
                    "recorder: stream {stream}: {queued} frames queued, "
                    "{written} written, {dropped} dropped, {failed} undecodable, "
                    "{segments} files",
                    stream=name,
                    **counts.asDict(),
                )

        return self._done.addCallback(finished)

    # Worker thread

    def run(self) -> None:
        """
        The writer loop: take jobs until the STOP marker, then finish every
        open file.  Runs in the worker thread.
        """
        while True:
            job = self._queue.get()
            if job is _STOP:
                break
            try:
                if isinstance(job, _CloseJob):
                    self._finish(job.stream)
                else:
                    self._write(job)
            except Exception:
                self.log.failure("recording {job!r} failed", job=job)
        for name in list(self._held) + list(self._segments):
            try:
                self._finish(name)
            except Exception:
                self.log.failure("finishing the recording of {stream} failed", stream=name)

    def _write(self, job: _FrameJob) -> None:
        counts = self._counts[job.stream]
        if job.fpsHint is None and job.stream not in self._segments:
            # The first frame of a stream: hold it until a second frame tells
            # the frame rate the file is opened with.
            self._flushHeld(job.stream, None)
            self._held[job.stream] = job
            return
        self._flushHeld(job.stream, job.fpsHint)
        self._writeOne(job, job.fpsHint, counts)

    def _flushHeld(self, stream: str, fps: float | None) -> None:
        held = self._held.pop(stream, None)
        if held is not None:
            self._writeOne(held, fps, self._counts[stream])

    def _writeOne(self, job: _FrameJob, fps: float | None, counts: _StreamCounts) -> None:
        try:
            image = self._decode(job.jpeg)
        except Exception as e:
            counts.failed += 1
            self.log.warn(
                "recorder could not decode frame {seq} of {stream}: {error}",
                seq=job.seq,
                stream=job.stream,
                error=str(e),
            )
            return
        height, width = image.shape[:2]
        segment = self._segments.get(job.stream)
        if segment is not None and (
            job.receiveTime - segment.start >= self.segmentSeconds
            or segment.size != (width, height)
        ):
            self._finish(job.stream)
            segment = None
        if segment is None:
            segment = self._open(job, fps, (width, height), counts)
        segment.writer.write(image)
        segment.frames += 1
        counts.written += 1

    def _open(self, job: _FrameJob, fps, size, counts: _StreamCounts) -> _Segment:
        fps = min(_MAX_FPS, max(_MIN_FPS, fps or _FALLBACK_FPS))
        base = segmentName(job.stream, job.receiveTime)
        path = os.path.join(self.directory, base)
        n = 1
        while os.path.exists(path):
            n += 1
            path = os.path.join(self.directory, base[:-4] + f"-{n}.avi")
        segment = _Segment(path, job.receiveTime, size, self._openVideo(path, fps, size))
        self._segments[job.stream] = segment
        counts.segments += 1
        counts.file = path
        self.log.info(
            "recording {stream} to {path} ({width}x{height} at {fps:.1f} fps)",
            stream=job.stream,
            path=path,
            width=size[0],
            height=size[1],
            fps=fps,
        )
        return segment

    def _finish(self, stream: str) -> None:
        self._flushHeld(stream, None)
        segment = self._segments.pop(stream, None)
        if segment is None:
            return
        segment.writer.release()
        counts = self._counts[stream]
        counts.file = None
        self.log.info(
            "recorded {frames} frames of {stream} to {path}",
            frames=segment.frames,
            stream=stream,
            path=segment.path,
        )


@frozen
class RecordingConfig:
    """
    Record every stream under C{directory} (absolute).

    A new recording setting is a field here, passed on by L{attachRecording}
    and filled from its option in L{imageproto.tap.config}.

    @ivar segmentSeconds: the longest span of receive time one file holds.
    """

    directory: str
    segmentSeconds: float = DEFAULT_SEGMENT_SECONDS


def attachRecording(receiver, config: RecordingConfig) -> Recorder:
    """
    Add a L{Recorder} to an L{imageproto.receiver.service.ReceiverService}:
    a consumer of its pipeline and a child service, so that stopping the
    receiver waits until every queued frame is written and every file
    finished.
    """
    recorder = Recorder(config.directory, segmentSeconds=config.segmentSeconds)
    receiver.addConsumer(recorder)
    recorder.setServiceParent(receiver)
    return recorder
