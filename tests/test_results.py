"""
Tests for L{imageproto.sender.results} (the sender's C{--results}) and for the
C{awaitResults} mode of L{imageproto.sender.flow.FrameSender} it relies on.
"""

from __future__ import annotations

import json
import os
import tempfile

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.sender.results import (
    RESULTS_FILE,
    SUMMARY_FILE,
    ResultRecord,
    ResultsTracker,
    ResultsWriter,
    annotatedName,
    percentile,
)
from imageproto.sender.flow import FrameSender
from imageproto.testing import FakeSenderProtocol

DETECT = wire.Welcome(capabilities=wire.SCAP_DETECT)


def connected(sender, welcome=DETECT):
    protocol = FakeSenderProtocol()
    sender.connected(protocol, welcome)
    return protocol


class FolderSource:
    """
    Looks like an image folder source: C{current} is the image last read.
    """

    current = None


def syncThread(f, *args):
    try:
        return succeed(f(*args))
    except Exception:
        return Failure()


class AwaitResultsTests(SynchronousTestCase):
    """
    L{FrameSender} with C{awaitResults}.
    """

    def test_doneOnlyAfterEveryResult(self):
        """
        With a detecting server, the run is not done when every frame is
        ACKed but when every RESULT is in; BYE waits too.
        """
        sender = FrameSender("s", False, Clock(), window=4, awaitResults=True)
        protocol = connected(sender)
        for _ in range(2):
            sender.frameCaptured(b"j", 1.0)
        sender.sourceExhausted()
        done = sender.whenDone()
        sender.acked(0)
        sender.acked(1)
        self.assertNoResult(done)
        self.assertEqual(protocol.goodbyes, [])
        sender.resultReceived(wire.Result(1))
        sender.resultReceived(wire.Result(0))
        self.assertEqual(self.successResultOf(done).results, 2)
        self.assertEqual(protocol.goodbyes, ["done"])

    def test_windowCountsFramesAwaitingResults(self):
        """
        A frame ACKed but unanswered still holds its place in the window.
        """
        sender = FrameSender("s", False, Clock(), window=1, awaitResults=True)
        connected(sender)
        sender.frameCaptured(b"j", 1.0)
        sender.acked(0)
        self.assertFalse(sender.ready)
        sender.resultReceived(wire.Result(0))
        self.assertTrue(sender.ready)

    def test_liveSourceNeverWaitsForResults(self):
        """
        A live source's ACKed frames leave the window at once: the server
        may skip them, and they would never be answered.
        """
        sender = FrameSender("s", True, Clock(), window=1, awaitResults=True)
        connected(sender)
        sender.frameCaptured(b"j", 1.0)
        sender.acked(0)
        self.assertTrue(sender.ready)

    def test_serverWithoutDetectorDoneOnAcks(self):
        """
        A server that does not announce SCAP_DETECT sends no RESULTs, so
        ACKs alone finish the run.
        """
        sender = FrameSender("s", False, Clock(), awaitResults=True)
        connected(sender, wire.Welcome())
        sender.frameCaptured(b"j", 1.0)
        sender.sourceExhausted()
        sender.acked(0)
        self.successResultOf(sender.whenDone())

    def test_lostResultsResent(self):
        """
        A finite source's frames ACKed but unanswered when the connection
        drops are sent again on the next connection.
        """
        sender = FrameSender("s", False, Clock(), awaitResults=True)
        first = connected(sender)
        sender.frameCaptured(b"j0", 1.0)
        sender.acked(0)
        sender.disconnected(first, Failure(ConnectionError("gone")))
        second = connected(sender)
        self.assertEqual(second.seqs, [0])


class TrackerTests(SynchronousTestCase):
    """
    L{ResultsTracker}: frames tied to their RESULTs.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.sender = FrameSender("cam", False, self.clock, window=4, awaitResults=True)
        self.records = []
        self.source = FolderSource()
        self.tracker = ResultsTracker(
            self.sender, self.records.append, self.clock, self.source,
            images=("a.png", "b.jpg", "bad.jpg"),
        )
        self.sender.onResult = self.tracker.resultReceived
        connected(self.sender)

    def offer(self, name):
        self.source.current = name
        return self.tracker.frameCaptured(b"jpeg-" + name.encode(), 999.5)

    def test_recordsTiedBySeq(self):
        """
        Each RESULT becomes a record with its frame's image name, capture
        time and round trip on the sender's clock, even out of order.
        """
        self.offer("a.png")
        self.clock.advance(0.010)
        self.offer("b.jpg")
        self.clock.advance(0.030)
        det = [{"label": "face", "confidence": 0.9, "box": [1, 2, 3, 4]}]
        self.sender.resultReceived(wire.Result(1, det, 2500, b"\xff\xd8\xffX\xff\xd9"))
        self.sender.resultReceived(wire.Result(0, [], 100))
        b, a = self.records
        self.assertEqual((a.seq, a.image, b.seq, b.image), (0, "a.png", 1, "b.jpg"))
        self.assertEqual(a.roundTripMs, 40.0)
        self.assertEqual(b.roundTripMs, 30.0)
        self.assertEqual(b.detections, det)
        self.assertEqual(b.toJSON()["processingMs"], 2.5)
        self.assertEqual(b.annotated, "b.jpg")
        self.assertNotIn("annotated", a.toJSON())

    def test_metadataRecorded(self):
        """
        Each record carries its frame's metadata, decoded: the sender's
        fixed metadata, or what the frame was offered with; a frame without
        metadata has no C{metadata} key in its line.
        """
        sender = FrameSender(
            "cam", False, self.clock, window=4, awaitResults=True, metadata='{"site":"door"}'
        )
        tracker = ResultsTracker(sender, self.records.append, self.clock)
        sender.onResult = tracker.resultReceived
        connected(sender)
        tracker.frameCaptured(b"a", 1.0)
        tracker.frameCaptured(b"b", 2.0, '"second"')
        for seq in (0, 1):
            sender.resultReceived(wire.Result(seq))
        first, second = self.records
        self.assertEqual(first.metadata, {"site": "door"})
        self.assertEqual(first.toJSON()["metadata"], {"site": "door"})
        self.assertEqual(second.toJSON()["metadata"], "second")
        self.offer("a.png")
        self.sender.resultReceived(wire.Result(0))
        self.assertNotIn("metadata", self.records[-1].toJSON())

    def test_summary(self):
        """
        The summary counts results and detections, and names images never
        sent (unreadable) and frames unanswered.
        """
        self.offer("a.png")
        self.offer("b.jpg")
        self.sender.resultReceived(
            wire.Result(0, [{"label": "x", "confidence": 1, "box": [0, 0, 1, 1]}])
        )
        summary = self.tracker.summary()
        self.assertEqual((summary.frames, summary.results, summary.detections), (2, 1, 1))
        self.assertEqual(summary.unanswered, ("b.jpg",))
        self.assertEqual(summary.unreadable, ("bad.jpg",))

    def test_forwardsToSender(self):
        """
        The tracker is a transparent sink: frames reach the sender, and
        readiness and the end of the source pass through.
        """
        self.assertTrue(self.offer("a.png"))
        self.assertEqual(self.sender.summary().sent, 1)
        self.successResultOf(self.tracker.whenReady())
        self.tracker.sourceExhausted()
        self.assertNoResult(self.sender.whenDone())

    def test_unknownResultIgnored(self):
        """
        A RESULT for a frame not sent is ignored.
        """
        self.sender.resultReceived(wire.Result(42))
        self.assertEqual(self.records, [])


class WriterTests(SynchronousTestCase):
    """
    L{ResultsWriter} on a real folder (writes run synchronously here).
    """

    def test_writesJsonlImagesAndSummary(self):
        """
        Records go to results.jsonl one per line, annotated JPEGs beside it,
        and stopping writes summary.json.
        """
        directory = os.path.join(tempfile.mkdtemp(), "out")
        writer = ResultsWriter(directory, runInThread=syncThread)
        writer.startService()
        writer.write(ResultRecord("cam", 0, "x.png", 1.0, 1.5, 1.75, 1000, [], b"JPEG"))
        writer.write(
            ResultRecord("cam", 1, None, 2.0, 2.5, 2.5, 0, [{"label": "a"}], metadata={"k": "\N{SNOWMAN}"})
        )
        clock = Clock()
        sender = FrameSender("cam", False, clock)
        writer.tracker = ResultsTracker(sender, writer.write, clock)
        self.successResultOf(writer.stopService())
        with open(os.path.join(directory, RESULTS_FILE)) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([line["seq"] for line in lines], [0, 1])
        self.assertEqual(lines[0]["roundTripMs"], 250.0)
        self.assertEqual(lines[0]["image"], "x.png")
        self.assertEqual(lines[0]["annotated"], "x.png.jpg")
        self.assertNotIn("metadata", lines[0])
        self.assertEqual(lines[1]["metadata"], {"k": "\N{SNOWMAN}"})
        with open(os.path.join(directory, "x.png.jpg"), "rb") as f:
            self.assertEqual(f.read(), b"JPEG")
        with open(os.path.join(directory, SUMMARY_FILE)) as f:
            self.assertEqual(json.load(f)["frames"], 0)

    def test_writeFailureLogged(self):
        """
        A folder that cannot be created is logged, not raised.
        """
        blocker = tempfile.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
        writer = ResultsWriter(os.path.join(blocker, "out"), runInThread=syncThread)
        writer.startService()
        self.successResultOf(writer.stopService())
        self.assertTrue(self.flushLoggedErrors(OSError))


class HelperTests(SynchronousTestCase):
    def test_annotatedName(self):
        """
        Folder images keep their name (plus .jpg unless already JPEG);
        other frames are named by seq.
        """
        self.assertEqual(annotatedName(7, None), "00000007.jpg")
        self.assertEqual(annotatedName(7, "a.JPEG"), "a.JPEG")
        self.assertEqual(annotatedName(7, "a.png"), "a.png.jpg")

    def test_percentile(self):
        """
        Nearest-rank percentiles.
        """
        self.assertIsNone(percentile([], 0.5))
        self.assertEqual(percentile([3, 1, 2], 0.5), 2)
        self.assertEqual(percentile(range(1, 101), 0.99), 99)


class SenderTapTests(SynchronousTestCase):
    """
    The sender tap's C{--results}.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.images = os.path.join(self.directory, "images")
        os.makedirs(self.images)
        with open(os.path.join(os.path.dirname(__file__), "data", "chelsea.jpg"), "rb") as f:
            data = f.read()
        with open(os.path.join(self.images, "a.jpg"), "wb") as f:
            f.write(data)

    def parse(self, *args):
        from imageproto.tap.sender import Options

        options = Options()
        options.parseOptions(["--images", self.images, *args])
        return options

    def test_resultsPathAbsolute(self):
        """
        C{--results} is stored as an absolute path; a file there is refused.
        """
        from twisted.python.usage import UsageError

        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.directory)
        self.assertEqual(self.parse("--results", "out")["results"], os.path.join(self.directory, "out"))
        with open(os.path.join(self.directory, "file"), "w"):
            pass
        self.assertRaises(UsageError, self.parse, "--results", "file")

    def test_makeServiceWiresTheTracker(self):
        """
        With C{--results}, the capture loop offers frames to a
        L{ResultsTracker}, the sender awaits results and hands them to the
        tracker, and a L{ResultsWriter} runs beside it.
        """
        from twisted.internet.testing import MemoryReactorClock

        from imageproto.tap.sender import makeService

        service = makeService(
            self.parse("--results", os.path.join(self.directory, "out")),
            reactor=MemoryReactorClock(),
        )
        writers = [s for s in service if isinstance(s, ResultsWriter)]
        self.assertEqual(len(writers), 1)
        tracker = writers[0].tracker
        self.assertIsInstance(tracker, ResultsTracker)
        self.assertTrue(tracker.sender.awaitResults)
        self.assertEqual(tracker.sender.onResult, tracker.resultReceived)
        self.assertEqual(tracker.images, ("a.jpg",))

    def test_withoutResults(self):
        """
        Without C{--results} the sender does not wait for RESULTs.
        """
        from twisted.internet.testing import MemoryReactorClock

        from imageproto.tap.sender import makeService

        service = makeService(self.parse(), reactor=MemoryReactorClock())
        self.assertEqual([s for s in service if isinstance(s, ResultsWriter)], [])
