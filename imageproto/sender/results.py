# -*- test-case-name: tests.test_results -*-
"""
The sender's C{--results DIR}: every RESULT written down, tied to the frame
it answers.

  - C{DIR/results.jsonl}: one JSON object per answered frame::

        {"stream": "cam1", "seq": 12, "image": "IMG_0012.png",
         "captureTime": 1700000000.123, "sendTime": 1700000000.125,
         "resultTime": 1700000000.161, "roundTripMs": 36.1,
         "processingMs": 21.4, "detections": [{"label": "face",
         "confidence": 0.91, "box": [x, y, w, h]}], "annotated": "IMG_0012.png.jpg",
         "metadata": {"site": "door"}}

    C{image} is present for an image folder (C{--images}); C{annotated}
    when the server sent the marked-up frame back (C{--reply annotated});
    C{metadata} when the frame had metadata (C{--metadata}), as given to
    the frame, whether or not the receiver took it.
  - C{DIR/<image name>.jpg} (the name as is when it already ends in
    C{.jpg}/C{.jpeg}) or C{DIR/<seq, 8 digits>.jpg}: the marked-up frames.
  - C{DIR/summary.json}, written at the end of the run.

The round trip is measured on the sender's clock from the moment the frame
was handed to the connection to the moment its RESULT arrived.  A frame
resent after a reconnect keeps its first send time.

Files are written by one worker thread, in order; stopping waits for the
last write.
"""

from __future__ import annotations

import json
import os
from functools import partial

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from imageproto import wire
from imageproto.common.files import writeBytesAtomically, writeJsonAtomically
from imageproto.common.numbers import percentile
from imageproto.common.reactor import defaultReactor

__all__ = [
    "RESULTS_FILE",
    "SUMMARY_FILE",
    "ResultRecord",
    "ResultsSummary",
    "ResultsTracker",
    "ResultsWriter",
    "annotatedName",
    "percentile",
]

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"


def annotatedName(seq: int, image: str | None) -> str:
    """
    The file name for a marked-up frame.
    """
    if image is None:
        return f"{seq:08d}.jpg"
    base = os.path.basename(image)
    if os.path.splitext(base)[1].lower() in (".jpg", ".jpeg"):
        return base
    return base + ".jpg"


@frozen
class ResultRecord:
    """
    One line of C{results.jsonl} plus the image to write beside it.
    """

    stream: str
    seq: int
    image: str | None
    captureTime: float
    sendTime: float | None
    resultTime: float
    processingMicros: int
    detections: list
    jpeg: bytes = field(repr=False, default=b"")
    metadata: object = field(default=None, hash=False)

    @property
    def roundTripMs(self) -> float | None:
        if self.sendTime is None:
            return None
        return round((self.resultTime - self.sendTime) * 1000.0, 3)

    @property
    def annotated(self) -> str | None:
        return annotatedName(self.seq, self.image) if self.jpeg else None

    def toJSON(self) -> dict:
        record = {"stream": self.stream, "seq": self.seq}
        if self.image is not None:
            record["image"] = self.image
        record.update(
            captureTime=self.captureTime,
            sendTime=self.sendTime,
            resultTime=self.resultTime,
            roundTripMs=self.roundTripMs,
            processingMs=round(self.processingMicros / 1000.0, 3),
            detections=self.detections,
        )
        if self.jpeg:
            record["annotated"] = self.annotated
        if self.metadata is not None:
            record["metadata"] = self.metadata
        return record


@frozen
class ResultsSummary:
    """
    What C{--results} saw over a run.

    @ivar unanswered: images sent that got no RESULT (live frames the
        server skipped, or a run cut short).
    @ivar unreadable: image folder entries never sent (the capture log
        names why: an unreadable file).
    """

    frames: int
    results: int
    detections: int
    annotated: int
    roundTripP50Ms: float | None
    roundTripP99Ms: float | None
    unanswered: tuple = ()
    unreadable: tuple = ()

    def toJSON(self) -> dict:
        return {
            "frames": self.frames,
            "results": self.results,
            "detections": self.detections,
            "annotated": self.annotated,
            "roundTripP50Ms": self.roundTripP50Ms,
            "roundTripP99Ms": self.roundTripP99Ms,
            "unanswered": list(self.unanswered),
            "unreadable": list(self.unreadable),
        }


@define
class _Sent:
    captureTime: float
    sendTime: float | None
    image: str | None
    metadata: str | None = None


class ResultsTracker:
    """
    Sits between the capture loop and the L{imageproto.sender.flow.FrameSender}
    (it is the capture loop's sink and forwards everything), remembering
    for each frame the sender takes its capture time, send time and image
    name; the sender's C{onResult} is L{resultReceived}.

    The sender numbers the frames it takes 0, 1, 2, ... in the order they
    are offered, so counting taken frames here gives their seq.

    @param sender: the L{imageproto.sender.flow.FrameSender}.
    @param write: called with each L{ResultRecord}.
    @param clock: the sender's C{IReactorTime}.
    @param source: the capture source; an image folder's C{current} names
        each frame.
    @param images: every name in the image folder, to report the ones never
        sent.
    """

    log = Logger()

    def __init__(self, sender, write, clock, source=None, images=()) -> None:
        self.sender = sender
        self.write = write
        self.clock = clock
        self.source = source
        self.images = tuple(images)
        self._sent: dict[int, _Sent] = {}
        self._taken = 0
        self._roundTrips: list[float] = []
        self._results = 0
        self._detections = 0
        self._annotated = 0
        self._sentNames: set = set()

    # The capture loop's view of the sender.

    def whenReady(self) -> Deferred:
        return self.sender.whenReady()

    @property
    def finished(self) -> bool:
        return self.sender.finished

    def sourceExhausted(self) -> None:
        self.sender.sourceExhausted()

    def fail(self, reason: str) -> None:
        self.sender.fail(reason)

    def frameCaptured(
        self, jpeg: bytes, captureTime: float, metadata: str | None = None
    ) -> bool:
        connected = self.sender.protocol is not None
        if not self.sender.frameCaptured(jpeg, captureTime, metadata):
            return False
        if metadata is None:
            metadata = self.sender.metadata
        seq = self._taken
        self._taken += 1
        image = getattr(self.source, "current", None)
        if image is not None:
            self._sentNames.add(image)
        # A connected sender transmits at once; otherwise the frame goes on
        # the next connection and its send time is when that happens.
        self._sent[seq] = _Sent(
            captureTime, self.clock.seconds() if connected else None, image, metadata
        )
        return True

    def resultReceived(self, result: wire.Result) -> None:
        """
        The sender's C{onResult}: record C{result} against its frame.
        """
        sent = self._sent.pop(result.seq, None)
        if sent is None:
            self.log.debug("RESULT for frame {seq}, not one we sent", seq=result.seq)
            return
        now = self.clock.seconds()
        record = ResultRecord(
            self.sender.name,
            result.seq,
            sent.image,
            sent.captureTime,
            sent.sendTime,
            now,
            result.processingMicros,
            result.detections,
            result.jpeg,
            None if sent.metadata is None else wire.decodeMetadata(sent.metadata),
        )
        self._results += 1
        self._detections += len(result.detections)
        self._annotated += bool(result.jpeg)
        if record.roundTripMs is not None:
            self._roundTrips.append(record.roundTripMs)
        self.write(record)

    def summary(self) -> ResultsSummary:
        unanswered = tuple(
            sent.image if sent.image is not None else str(seq)
            for seq, sent in sorted(self._sent.items())
        )
        unreadable = tuple(n for n in self.images if n not in self._sentNames)
        return ResultsSummary(
            frames=self._taken,
            results=self._results,
            detections=self._detections,
            annotated=self._annotated,
            roundTripP50Ms=percentile(self._roundTrips, 0.5),
            roundTripP99Ms=percentile(self._roundTrips, 0.99),
            unanswered=unanswered,
            unreadable=unreadable,
        )


def _append(directory: str, record: ResultRecord) -> None:
    if record.jpeg:
        writeBytesAtomically(os.path.join(directory, record.annotated), record.jpeg)
    with open(os.path.join(directory, RESULTS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record.toJSON(), separators=(",", ":")) + "\n")


def _writeSummary(directory: str, summary: ResultsSummary) -> None:
    writeJsonAtomically(
        os.path.join(directory, SUMMARY_FILE), summary.toJSON(), indent=2, sortKeys=False
    )


def _prepare(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    # One run, one results file: start it empty.
    open(os.path.join(directory, RESULTS_FILE), "w").close()


class ResultsWriter(Service):
    """
    Writes L{ResultRecord}s under C{directory}, in order, from one worker
    thread.

    @param runInThread: injected for tests; by default a one-thread pool the
        service starts and stops.
    """

    log = Logger()

    def __init__(self, directory: str, runInThread=None, reactor=None) -> None:
        self.directory = directory
        self._pool = None
        if runInThread is None:
            reactor = defaultReactor(reactor)
            self._pool = ThreadPool(minthreads=0, maxthreads=1, name="results")
            runInThread = partial(deferToThreadPool, reactor, self._pool)
        self.runInThread = runInThread
        self._tail: Deferred = succeed(None)
        self.tracker: ResultsTracker | None = None

    def startService(self) -> None:
        super().startService()
        if self._pool is not None:
            self._pool.start()
        self._then(_prepare, self.directory)

    def _then(self, f, *args) -> None:
        def run(_):
            return self.runInThread(f, *args)

        def failed(failure):
            self.log.failure("cannot write results to {dir}", failure, dir=self.directory)

        self._tail = self._tail.addCallback(run).addErrback(failed)

    def write(self, record: ResultRecord) -> None:
        """
        Queue C{record} for writing.
        """
        self._then(_append, self.directory, record)

    def finish(self, summary: ResultsSummary) -> None:
        """
        Log the run's summary and queue C{summary.json}.
        """
        self.log.info(
            "results: {results} of {frames} frames answered, {detections} "
            "detections, {annotated} annotated images, round trip p50 {p50} ms "
            "p99 {p99} ms; written to {dir}",
            results=summary.results,
            frames=summary.frames,
            detections=summary.detections,
            annotated=summary.annotated,
            p50=summary.roundTripP50Ms,
            p99=summary.roundTripP99Ms,
            dir=self.directory,
        )
        for name in summary.unreadable:
            self.log.warn("image {name} was not sent (unreadable)", name=name)
        if summary.unanswered:
            self.log.warn(
                "{count} frames got no result: {names}",
                count=len(summary.unanswered),
                names=", ".join(summary.unanswered[:20]),
            )
        self._then(_writeSummary, self.directory, summary)

    def stopService(self):
        super().stopService()
        if self.tracker is not None:
            self.finish(self.tracker.summary())
        d, self._tail = self._tail, succeed(None)

        def stopped(_):
            if self._pool is not None:
                self._pool.stop()

        return d.addBoth(stopped)
