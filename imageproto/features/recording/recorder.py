# -*- test-case-name: tests.test_recorder -*-
"""
L{Recorder}: the receiver's C{--record-dir} sink and service.

In the reactor thread it only puts frames on a bounded queue (counting any
it must drop), so a slow disk never stalls receiving.  One worker thread
takes them off and writes them with a writer from
L{imageproto.features.recording.media}.
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

from imageproto.features.recording.media import (
    FORMATS,
    TIME_BASE,
    Timeline,
    UndecodableFrame,
    jpegSize,
    openWriter,
)
from imageproto.receiver.consumers import IFrameSink

__all__ = ["Recorder", "segmentName", "DEFAULT_SEGMENT_SECONDS", "DEFAULT_FORMAT"]

DEFAULT_SEGMENT_SECONDS = 300.0
DEFAULT_MAX_QUEUED = 120
DEFAULT_FORMAT = "mkv"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def segmentName(stream: str, start: float, extension: str = DEFAULT_FORMAT) -> str:
    """
    The file name of a segment of C{stream} beginning at C{start} (seconds
    since the epoch): the stream name with any character other than letters,
    digits, C{.}, C{_} and C{-} replaced by C{_}, then the UTC start time
    and C{extension}.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
    return f"{_UNSAFE.sub('_', stream).lstrip('.') or '_'}-{stamp}.{extension}"


@frozen
class _FrameJob:
    stream: str
    seq: int
    captureTime: float
    receiveTime: float
    jpeg: bytes = field(repr=False)


@frozen
class _CloseJob:
    stream: str


_STOP = object()


@define
class _StreamCounts:
    """
    One stream's recording counts.  C{queued} and C{dropped} are changed
    only in the reactor thread; the others only in the worker thread
    (reading a Python int or str from the other thread is safe).
    """

    format: str
    queued: int = 0
    dropped: int = 0
    written: int = 0
    failed: int = 0
    retimed: int = 0
    segments: int = 0
    file: str | None = None

    def asDict(self) -> dict:
        return {
            "queued": self.queued,
            "dropped": self.dropped,
            "written": self.written,
            "failed": self.failed,
            "retimed": self.retimed,
            "segments": self.segments,
            "file": self.file,
            "format": self.format,
        }


@define
class _Segment:
    """
    The open file of one stream; touched only in the worker thread.
    """

    path: str
    size: tuple[int, int]
    writer: object
    timeline: Timeline = field(factory=Timeline)
    frames: int = 0


@implementer(IFrameSink)
class Recorder(Service):
    """
    Records every stream into segmented video files off the reactor, each
    frame at its capture time.

    @param directory: where the files go (created when the service starts).
    @param segmentSeconds: the longest span of video one file holds.
    @param maxQueued: frames that may wait for the writer, over all streams;
        frames beyond it are dropped and counted.
    @param format: a key of L{FORMATS}: C{"mkv"} (the JPEGs as received, in
        Matroska) or C{"mp4"} (H.264 in fragmented MP4).  The attribute may
        be changed until the service starts.
    @param runInThread: C{f(callable) -> Deferred} running the writer loop in
        a thread; by default a one-thread pool this service starts and stops.
    @param openWriter: C{f(format, path, (width, height))} returning an
        object with C{write(jpeg, pts)} and C{close()}; called in the worker
        thread.
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        segmentSeconds: float = DEFAULT_SEGMENT_SECONDS,
        maxQueued: int = DEFAULT_MAX_QUEUED,
        format: str = DEFAULT_FORMAT,
        runInThread: Callable[..., Deferred] | None = None,
        openWriter: Callable = openWriter,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.segmentSeconds = segmentSeconds
        self.maxQueued = maxQueued
        self.format = format
        self._runInThread = runInThread
        self._openWriter = openWriter
        # Unbounded as a structure: only the reactor thread puts, and it
        # checks the bound first, so the STOP marker always fits.
        self._queue: queue.Queue = queue.Queue()
        self._counts: dict[str, _StreamCounts] = {}
        self._segments: dict[str, _Segment] = {}
        self._accepting = False
        self._pool: ThreadPool | None = None
        self._done: Deferred | None = None

    def _countsFor(self, stream: str) -> _StreamCounts:
        counts = self._counts.get(stream)
        if counts is None:
            counts = self._counts[stream] = _StreamCounts(self.format)
        return counts

    # IFrameSink, reactor thread

    def frameReceived(self, frame) -> None:
        counts = self._countsFor(frame.stream)
        if not self._accepting or self._queue.qsize() >= self.maxQueued:
            counts.dropped += 1
            self.log.debug(
                "recorder dropped frame {seq} of {stream}",
                seq=frame.seq,
                stream=frame.stream,
            )
            return None
        counts.queued += 1
        self._queue.put(
            _FrameJob(
                frame.stream, frame.seq, frame.captureTime, frame.receiveTime, frame.jpeg
            )
        )
        return None

    def resultReady(self, frame, result) -> None:
        """
        A detector's answer to C{frame}: not recorded.  (The receiver's
        frame pipeline tells every consumer of answers.)
        """

    def streamStarted(self, name: str) -> None:
        pass

    def streamStopped(self, name: str) -> None:
        if self._accepting:
            self._queue.put(_CloseJob(name))

    def close(self) -> None:
        return None

    def stats(self) -> dict:
        """
        C{{stream: {"queued", "dropped", "written", "failed", "retimed",
        "segments", "file", "format"}}}: frames put on the queue, dropped
        because it was full (or the recorder was stopped), written,
        undecodable, timed by receive time because the capture time was
        not believable, files begun, the file being written now, and the
        file format.
        """
        return {name: c.asDict() for name, c in sorted(self._counts.items())}

    # Service

    def startService(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown recording format {self.format!r}")
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
            "recording to {directory} as {fileFormat} in segments of {seconds} s",
            directory=self.directory,
            # Not "format": Logger.emit takes the message under that name.
            fileFormat=self.format,
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
                    "{retimed} timed by receive time, {segments} files",
                    stream=name,
                    queued=counts.queued,
                    written=counts.written,
                    dropped=counts.dropped,
                    failed=counts.failed,
                    retimed=counts.retimed,
                    segments=counts.segments,
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
        for name in list(self._segments):
            try:
                self._finish(name)
            except Exception:
                self.log.failure("finishing the recording of {stream} failed", stream=name)

    def _undecodable(self, job: _FrameJob, counts: _StreamCounts, error) -> None:
        counts.failed += 1
        self.log.warn(
            "recorder could not decode frame {seq} of {stream}: {error}",
            seq=job.seq,
            stream=job.stream,
            error=str(error),
        )

    def _write(self, job: _FrameJob) -> None:
        counts = self._counts[job.stream]
        try:
            size = jpegSize(job.jpeg)
        except UndecodableFrame as e:
            return self._undecodable(job, counts, e)
        segment = self._segments.get(job.stream)
        if segment is not None and segment.size != size:
            # A video track has one frame size.
            self._finish(job.stream)
            segment = None
        retimed = False
        if segment is not None:
            before = segment.timeline.fallbacks
            pts = segment.timeline.place(job.captureTime, job.receiveTime)
            retimed = segment.timeline.fallbacks > before
            if pts * TIME_BASE >= self.segmentSeconds:
                self._finish(job.stream)
                segment, retimed = None, False
        if segment is None:
            segment = self._open(job, size, counts)
            pts = segment.timeline.place(job.captureTime, job.receiveTime)
        try:
            segment.writer.write(job.jpeg, pts)
        except UndecodableFrame as e:
            return self._undecodable(job, counts, e)
        segment.frames += 1
        counts.written += 1
        counts.retimed += retimed
        self.log.debug(
            "recorded frame {seq} of {stream} at {pts} ms",
            seq=job.seq,
            stream=job.stream,
            pts=pts,
        )

    def _open(self, job: _FrameJob, size, counts: _StreamCounts) -> _Segment:
        extension = FORMATS[self.format].extension
        base = segmentName(job.stream, job.receiveTime, extension)
        path = os.path.join(self.directory, base)
        n = 1
        while os.path.exists(path):
            n += 1
            path = os.path.join(
                self.directory, base[: -len(extension) - 1] + f"-{n}.{extension}"
            )
        segment = _Segment(path, size, self._openWriter(self.format, path, size))
        self._segments[job.stream] = segment
        counts.segments += 1
        counts.file = path
        self.log.info(
            "recording {stream} to {path} ({width}x{height}, {fileFormat})",
            stream=job.stream,
            path=path,
            width=size[0],
            height=size[1],
            fileFormat=self.format,
        )
        return segment

    def _finish(self, stream: str) -> None:
        segment = self._segments.pop(stream, None)
        if segment is None:
            return
        self._counts[stream].file = None
        try:
            segment.writer.close()
        finally:
            if segment.frames == 0:
                # Only undecodable frames came: leave no empty file behind.
                self._counts[stream].segments -= 1
                try:
                    os.remove(segment.path)
                except OSError:
                    pass
        self.log.info(
            "recorded {frames} frames of {stream} to {path}",
            frames=segment.frames,
            stream=stream,
            path=segment.path,
        )
