"""
Tests for L{imageproto.sender.flow}: the window, drops, waits, resends and the
summary, with plain calls and a fake clock.
"""

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.sender.flow import FrameSender, SenderFailed, percentile
from imageproto.testing import FakeSenderProtocol

LOST = Failure(ConnectionError("gone"))


def makeSender(live=False, window=3, **kwargs):
    clock = Clock()
    sender = FrameSender("cam", live, clock, window=window, session=42, **kwargs)
    return sender, clock


def connect(sender, welcome=None):
    protocol = FakeSenderProtocol(sender.drained)
    sender.connected(protocol, welcome or wire.Welcome())
    return protocol


class HelloTests(SynchronousTestCase):
    def test_liveHello(self):
        """
        A live sender's HELLO carries its name, its session, CAP_LIVE,
        CAP_RESULTS, CAP_RETRY and CAP_CLOCK.
        """
        sender, _ = makeSender(live=True)
        self.assertEqual(
            sender.hello(),
            wire.Hello(
                "cam",
                wire.CAP_LIVE | wire.CAP_RESULTS | wire.CAP_RETRY | wire.CAP_CLOCK,
                42,
            ),
        )

    def test_finiteHello(self):
        """
        A finite source's HELLO does not claim CAP_LIVE, nor CAP_RESUME
        unless its session names its content.
        """
        sender, _ = makeSender(live=False)
        self.assertEqual(
            sender.hello().capabilities,
            wire.CAP_RESULTS | wire.CAP_RETRY | wire.CAP_CLOCK,
        )

    def test_sessionRandomAndStable(self):
        """
        Without an explicit session, each sender picks a random u64 and
        repeats it in every HELLO.
        """
        a = FrameSender("cam", False, Clock())
        b = FrameSender("cam", False, Clock())
        self.assertNotEqual(a.session, b.session)
        self.assertEqual(a.hello().session, a.hello().session)
        self.assertTrue(0 <= a.session < 2**64)


class WindowTests(SynchronousTestCase):
    def test_framesSentWithSeqAndTimes(self):
        """
        Each frame offered while connected is sent at once with the next
        seq, its capture time, the send time and the drop count.
        """
        sender, clock = makeSender()
        protocol = connect(sender)
        clock.advance(10)
        self.assertTrue(sender.frameCaptured(b"a", 9.5))
        self.assertEqual(protocol.frames, [wire.Frame(0, b"a", 9.5, 10.0, 0)])
        sender.frameCaptured(b"b", 9.6)
        self.assertEqual(protocol.seqs, [0, 1])

    def test_liveDropsWhenWindowFull(self):
        """
        A live source's frame offered with C{window} frames unacknowledged
        is dropped, uses no seq, and the next FRAME's trailer counts it.
        """
        sender, _ = makeSender(live=True, window=2)
        protocol = connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.frameCaptured(b"1", 0)
        self.assertFalse(sender.frameCaptured(b"x", 0))
        self.assertEqual(sender.summary().dropped, 1)
        sender.acked(0)
        self.assertTrue(sender.frameCaptured(b"2", 0))
        self.assertEqual(protocol.frames[-1], wire.Frame(2, b"2", 0, 0, 1))

    def test_liveDropsWhenPaused(self):
        """
        A live source's frame is dropped while the transport's buffer is
        full, even with room in the window.
        """
        sender, _ = makeSender(live=True)
        protocol = connect(sender)
        protocol.pressure.pauseProducing()
        self.assertFalse(sender.frameCaptured(b"x", 0))
        protocol.pressure.resumeProducing()
        self.assertTrue(sender.frameCaptured(b"y", 0))
        self.assertEqual(protocol.seqs, [0])

    def test_liveDropsWhenDisconnected(self):
        """
        A live source's frames are dropped while no server is connected.
        """
        sender, _ = makeSender(live=True)
        self.assertFalse(sender.frameCaptured(b"x", 0))
        self.assertEqual(sender.summary().dropped, 1)

    def test_liveUnackedLostOnDisconnect(self):
        """
        A live source's unacknowledged frames are abandoned (counted as
        lost), not resent, when the connection is lost.
        """
        sender, _ = makeSender(live=True)
        first = connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.frameCaptured(b"1", 0)
        sender.disconnected(first, LOST)
        second = connect(sender)
        self.assertEqual(second.frames, [])
        self.assertEqual(sender.summary().lost, 2)
        sender.frameCaptured(b"2", 0)
        self.assertEqual(second.seqs, [2])

    def test_finiteWaitsForRoom(self):
        """
        L{FrameSender.whenReady} fires at once with room in the window, and
        otherwise only once an ACK makes room.
        """
        sender, _ = makeSender(window=2)
        connect(sender)
        self.successResultOf(sender.whenReady())
        sender.frameCaptured(b"0", 0)
        sender.frameCaptured(b"1", 0)
        d = sender.whenReady()
        self.assertNoResult(d)
        sender.acked(0)
        self.successResultOf(d)

    def test_finiteWaitsForConnection(self):
        """
        While disconnected, whenReady waits until a server welcomes the
        sender.
        """
        sender, _ = makeSender()
        d = sender.whenReady()
        self.assertNoResult(d)
        connect(sender)
        self.successResultOf(d)

    def test_finiteWaitsWhilePaused(self):
        """
        While the transport's buffer is full, whenReady waits, and it fires
        as soon as the transport says the buffer drained (no timer runs).
        """
        sender, clock = makeSender()
        protocol = connect(sender)
        protocol.pressure.pauseProducing()
        d = sender.whenReady()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertNoResult(d)
        protocol.pressure.resumeProducing()
        self.successResultOf(d)

    def test_whenReadyCancellable(self):
        """
        Cancelling a whenReady Deferred forgets it.
        """
        sender, _ = makeSender()
        d = sender.whenReady()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        connect(sender)

    def test_finiteFrameHeldWhileDisconnected(self):
        """
        A finite source's frame offered while disconnected is kept and sent
        on the next connection.
        """
        sender, _ = makeSender()
        self.assertTrue(sender.frameCaptured(b"0", 0))
        protocol = connect(sender)
        self.assertEqual(protocol.seqs, [0])

    def test_oversizedFrameNotSent(self):
        """
        A frame larger than the server's WELCOME limit is not sent, and is
        counted as dropped with a warning.
        """
        sender, _ = makeSender()
        protocol = connect(sender, wire.Welcome(maxMessageBytes=100))
        with capturedLogs() as events:
            self.assertFalse(sender.frameCaptured(b"x" * 100, 0))
        self.assertEqual(protocol.frames, [])
        self.assertEqual(sender.summary().dropped, 1)
        self.assertIn("exceeds the server's limit", events[0]["log_format"])


class DefaultWindowTests(SynchronousTestCase):
    """
    Without a window given, a live source keeps 8 frames unacknowledged at
    most and a finite one 16.
    """

    def test_liveAndFinite(self):
        for live, window in ((True, 8), (False, 16)):
            sender = FrameSender("cam", live, Clock(), session=1)
            self.assertEqual(sender.window, window)
            protocol = connect(sender)
            for _ in range(window):
                self.assertTrue(sender.ready)
                self.assertTrue(sender.frameCaptured(b"x", 1.0))
            # Full: a finite source's capture loop waits, a live one's frame
            # is dropped.
            self.assertFalse(sender.ready)
            self.assertEqual(len(protocol.frames), window)
            if live:
                self.assertFalse(sender.frameCaptured(b"x", 1.0))


class AckedTogetherTests(SynchronousTestCase):
    """
    C{ackedAll} settles the ACKs of one read, then wakes a waiting capture
    loop once.
    """

    def test_settledThenWokenOnce(self):
        sender, _ = makeSender(window=3)
        connect(sender)
        for _ in range(3):
            sender.frameCaptured(b"x", 1.0)
        woken = []
        sender.whenReady().addCallback(
            lambda _: woken.append(sender.summary().acknowledged)
        )
        sender.ackedAll([0, 1, 2])
        self.assertEqual(woken, [3])
        self.assertEqual(sender.summary().acknowledged, 3)


class ResendTests(SynchronousTestCase):
    def test_resendAfterReconnect(self):
        """
        After a reconnect a finite sender resends every unacknowledged
        frame, oldest first, with its original seq and bytes, and counts
        them as resent and the handshake as a reconnect.
        """
        sender, clock = makeSender(window=4)
        first = connect(sender)
        for i in range(4):
            sender.frameCaptured(b"f%d" % i, float(i))
        sender.acked(0)
        sender.acked(2)
        sender.disconnected(first, LOST)
        clock.advance(3)
        second = connect(sender)
        self.assertEqual(second.seqs, [1, 3])
        self.assertEqual([f.jpeg for f in second.frames], [b"f1", b"f3"])
        self.assertEqual([f.captureTime for f in second.frames], [1.0, 3.0])
        self.assertEqual([f.sendTime for f in second.frames], [3.0, 3.0])
        summary = sender.summary()
        self.assertEqual((summary.sent, summary.resent, summary.reconnects), (4, 2, 1))

    def test_staleDisconnectIgnored(self):
        """
        The loss of a connection that was never welcomed (refused, say)
        does not disturb the current one.
        """
        sender, _ = makeSender()
        protocol = connect(sender)
        sender.disconnected(FakeSenderProtocol(), LOST)
        self.assertIs(sender.protocol, protocol)

    def test_duplicateAckIgnored(self):
        """
        An ACK for a frame not outstanding changes no count.
        """
        sender, _ = makeSender()
        connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.acked(0)
        sender.acked(0)
        sender.acked(7)
        self.assertEqual(sender.summary().acknowledged, 1)


class FinishTests(SynchronousTestCase):
    def test_doneWhenAllAcknowledged(self):
        """
        Once the source is exhausted and the last frame is acknowledged, the
        sender says BYE and whenDone fires with the summary, round trips
        measured from send to ACK on the sender's clock.
        """
        sender, clock = makeSender()
        protocol = connect(sender)
        d = sender.whenDone()
        sender.frameCaptured(b"0", 0)
        clock.advance(0.1)
        sender.frameCaptured(b"1", 0)
        clock.advance(0.2)
        sender.acked(0)
        sender.sourceExhausted()
        self.assertNoResult(d)
        self.assertEqual(protocol.goodbyes, [])
        clock.advance(0.1)
        sender.acked(1)
        summary = self.successResultOf(d)
        self.assertEqual(protocol.goodbyes, ["done"])
        self.assertEqual((summary.sent, summary.acknowledged), (2, 2))
        self.assertAlmostEqual(summary.rttP50, 0.3)
        self.assertAlmostEqual(summary.rttP95, 0.3)
        self.successResultOf(sender.whenDone())

    def test_rejectedSettles(self):
        """
        A REJECT settles its frame: it is counted and no longer blocks the
        end of the run, which fails, naming how many frames were not stored
        and why (a finite source not delivered whole is no success).
        """
        sender, _ = makeSender()
        connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.sourceExhausted()
        with capturedLogs() as events:
            sender.rejected(0, "not a JPEG")
        failure = self.failureResultOf(sender.whenDone(), SenderFailed)
        self.assertIn("1 of 1 frames were not stored", failure.value.reason)
        self.assertIn("not a JPEG", failure.value.reason)
        summary = sender.summary()
        self.assertEqual((summary.rejected, summary.acknowledged), (1, 0))
        self.assertEqual(summary.rttP50, None)
        self.assertIn("not a JPEG", [e.get("reason") for e in events])

    def test_doneWaitsForReconnect(self):
        """
        A finite sender exhausted while frames are unacknowledged and the
        server is away finishes only after reconnecting and delivering them.
        """
        sender, _ = makeSender()
        first = connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.sourceExhausted()
        sender.disconnected(first, LOST)
        d = sender.whenDone()
        self.assertNoResult(d)
        second = connect(sender)
        self.assertNoResult(d)
        sender.acked(0)
        self.assertEqual(self.successResultOf(d).resent, 1)
        self.assertEqual(second.goodbyes, ["done"])

    def test_summaryLogged(self):
        """
        Finishing logs one summary event with every count.
        """
        sender, _ = makeSender()
        connect(sender)
        with capturedLogs() as events:
            sender.sourceExhausted()
        (event,) = [e for e in events if e.get("outcome") == "done"]
        for key in ("sent", "acknowledged", "rejected", "dropped", "reconnects", "p50", "p95"):
            self.assertIn(key, event)

    def test_refusedIsPermanent(self):
        """
        An ERROR before WELCOME fails whenDone with the server's reason.
        """
        sender, _ = makeSender()
        d = sender.whenDone()
        with capturedLogs():
            sender.refused(wire.Error(wire.ERR_BAD_NAME, "bad name"))
        failure = self.failureResultOf(d, SenderFailed)
        self.assertIn("bad name", failure.value.reason)
        self.assertFalse(sender.frameCaptured(b"late", 0))

    def test_transientRefusalRetries(self):
        """
        The transient codes of PROTOCOL.md's table (stream limit, timeout,
        shutdown, busy) before WELCOME mean "not now": the sender keeps going.
        """
        sender, _ = makeSender()
        with capturedLogs():
            for code in (
                wire.ERR_STREAM_LIMIT, wire.ERR_TIMEOUT, wire.ERR_SHUTDOWN, wire.ERR_BUSY
            ):
                sender.refused(wire.Error(code, "not now"))
        self.assertFalse(sender.finished)

    def test_transientFailureResends(self):
        """
        A transient ERROR after WELCOME (the server shutting down) closes the
        connection and the sender resends once it reconnects.
        """
        sender, _ = makeSender()
        protocol = connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.failed(wire.Error(wire.ERR_SHUTDOWN, "restarting"))
        sender.disconnected(protocol, LOST)
        self.assertFalse(sender.finished)
        self.assertEqual(connect(sender).seqs, [0])

    def test_replacedIsPermanent(self):
        """
        ERR_REPLACED after WELCOME (a newer sender took this name) is
        permanent: reconnecting would take the name back and the two senders
        would take turns forever.
        """
        sender, _ = makeSender()
        connect(sender)
        d = sender.whenDone()
        with capturedLogs():
            sender.failed(wire.Error(wire.ERR_REPLACED, "replaced"))
        failure = self.failureResultOf(d, SenderFailed)
        self.assertIn("replaced (code 9)", failure.value.reason)


class ResultTests(SynchronousTestCase):
    def test_resultCallback(self):
        """
        RESULT messages are counted and handed to C{onResult}.
        """
        seen = []
        sender, _ = makeSender(onResult=seen.append)
        result = wire.Result(3, [{"label": "cat"}])
        sender.resultReceived(result)
        self.assertEqual(seen, [result])
        self.assertEqual(sender.summary().results, 1)

    def test_resultWithoutCallback(self):
        """
        Without C{onResult}, RESULT messages are only counted.
        """
        sender, _ = makeSender()
        sender.resultReceived(wire.Result(3))
        self.assertEqual(sender.summary().results, 1)


class PercentileTests(SynchronousTestCase):
    def test_nearestRank(self):
        """
        percentile uses the nearest-rank method and gives None for no data.
        """
        values = list(range(1, 101))
        self.assertEqual(percentile(values, 0.5), 50)
        self.assertEqual(percentile(values, 0.95), 95)
        self.assertEqual(percentile([7], 0.95), 7)
        self.assertIsNone(percentile([], 0.5))


class StorageAndResumeTests(SynchronousTestCase):
    """
    A finite source retries frames the receiver cannot store for now, gives
    up honestly, and resumes where an earlier run stopped.
    """

    def test_temporaryRejectSentAgain(self):
        """
        A REJECT with the retry flag keeps the frame: it is sent again
        after a pause, and an ACK then settles it; the run is a success.
        """
        sender, clock = makeSender(retryFor=30)
        protocol = connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.sourceExhausted()
        sender.rejected(0, "disk full", retry=True)
        self.assertEqual(len(protocol.frames), 1)
        self.assertNoResult(sender.whenDone())
        clock.advance(1)
        self.assertEqual([f.seq for f in protocol.frames], [0, 0])
        sender.acked(0)
        summary = self.successResultOf(sender.whenDone())
        self.assertEqual((summary.acknowledged, summary.resent, summary.notStored), (1, 1, 0))

    def test_givesUpAfterRetryFor(self):
        """
        A frame still refused after C{retryFor} seconds is counted as not
        stored, and the run fails saying how many frames and why.
        """
        sender, clock = makeSender(retryFor=10)
        protocol = connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.frameCaptured(b"1", 0)
        sender.sourceExhausted()
        sender.acked(1)
        sender.rejected(0, "No space left on device", retry=True)
        for _ in range(20):
            clock.advance(1)
            if protocol.frames[-1].seq == 0:
                sender.rejected(0, "No space left on device", retry=True)
        failure = self.failureResultOf(sender.whenDone(), SenderFailed)
        self.assertIn("1 of 2 frames were not stored", failure.value.reason)
        self.assertIn("No space left on device", failure.value.reason)
        self.assertEqual(sender.summary().notStored, 1)

    def test_liveRetryIsRejected(self):
        """
        A live source never waits: a frame refused even for now is settled
        as rejected.
        """
        sender, clock = makeSender(live=True)
        connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.rejected(0, "disk full", retry=True)
        self.assertEqual(sender.summary().rejected, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_resumeSkipsWhatTheReceiverHolds(self):
        """
        A resumable sender says CAP_RESUME; when WELCOME says the receiver
        holds frames below 3, the first three frames captured are skipped
        (counted, not sent) and numbering goes on from 3.
        """
        sender, _ = makeSender(resumable=True)
        self.assertTrue(sender.hello().capabilities & wire.CAP_RESUME)
        protocol = connect(sender, wire.Welcome(wire.SCAP_RESUME, resume=3))
        for i in range(5):
            self.assertTrue(sender.frameCaptured(b"%d" % i, 0))
        self.assertEqual([f.seq for f in protocol.frames], [3, 4])
        sender.sourceExhausted()
        sender.acked(3)
        sender.acked(4)
        summary = self.successResultOf(sender.whenDone())
        self.assertEqual((summary.skipped, summary.sent, summary.acknowledged), (3, 2, 2))

    def test_resumeSettlesOutstandingFrames(self):
        """
        Frames outstanding when the connection dropped, which the receiver
        says it holds on reconnecting, are settled, not sent again.
        """
        sender, _ = makeSender(resumable=True)
        first = connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.frameCaptured(b"1", 0)
        sender.disconnected(first, Failure(ConnectionDone()))
        second = connect(sender, wire.Welcome(wire.SCAP_RESUME, resume=1))
        self.assertEqual([f.seq for f in second.frames], [1])
        self.assertEqual(sender.summary().acknowledged, 1)

    def test_unacknowledgedCounted(self):
        """
        The summary counts frames in flight, so that every frame sent is
        acknowledged, rejected, lost, not stored or unacknowledged.
        """
        sender, _ = makeSender(live=True)
        connect(sender)
        for i in range(3):
            sender.frameCaptured(b"x", 0)
        sender.acked(0)
        summary = sender.summary()
        self.assertEqual((summary.sent, summary.acknowledged, summary.unacknowledged), (3, 1, 2))


class MetadataTests(SynchronousTestCase):
    """
    Per-frame metadata goes on each FRAME to a receiver that announced
    C{SCAP_METADATA}, and is left off (said once) for one that did not.
    """

    TAKES = wire.Welcome(capabilities=wire.SCAP_METADATA)
    FIXED = '{"site":"door"}'

    def test_helloAnnouncesMetadata(self):
        """
        A sender with metadata sets C{CAP_METADATA} in HELLO; one without
        does not.
        """
        sender, _ = makeSender(metadata=self.FIXED)
        self.assertTrue(sender.hello().capabilities & wire.CAP_METADATA)
        sender, _ = makeSender()
        self.assertFalse(sender.hello().capabilities & wire.CAP_METADATA)

    def test_fixedMetadataOnEveryFrame(self):
        """
        The fixed metadata goes on every frame, resends included; metadata
        offered with a frame replaces it for that frame only.
        """
        sender, clock = makeSender(metadata=self.FIXED)
        protocol = connect(sender, self.TAKES)
        sender.frameCaptured(b"a", 1.0)
        sender.frameCaptured(b"b", 2.0, '"its own"')
        sender.frameCaptured(b"c", 3.0)
        self.assertEqual(
            [f.metadata for f in protocol.frames], [self.FIXED, '"its own"', self.FIXED]
        )
        sender.disconnected(protocol, LOST)
        again = connect(sender, self.TAKES)
        self.assertEqual(
            [(f.seq, f.metadata) for f in again.frames],
            [(0, self.FIXED), (1, '"its own"'), (2, self.FIXED)],
        )

    def test_notSentToReceiverWithoutCapability(self):
        """
        To a receiver whose WELCOME lacks C{SCAP_METADATA} frames go without
        metadata, and that is logged once for the run, not once per frame
        or connection; a later receiver that takes metadata gets it again.
        """
        sender, _ = makeSender(metadata=self.FIXED)
        with capturedLogs() as events:
            protocol = connect(sender)
            for i in range(3):
                sender.frameCaptured(b"x", float(i))
            sender.acked(0)
            sender.disconnected(protocol, LOST)
            connect(sender)
            sender.frameCaptured(b"y", 9.0)
        self.assertEqual([f.metadata for f in protocol.frames], [None] * 3)
        said = [e for e in events if "metadata" in e.get("log_format", "")]
        self.assertEqual(len(said), 1)
        self.assertEqual(said[0]["log_level"].name, "warn")
        later = connect(sender, self.TAKES)
        self.assertEqual({f.metadata for f in later.frames}, {self.FIXED})

    def test_withoutMetadataNothingLogged(self):
        """
        A sender without metadata says nothing about a receiver that does
        not take it, and its frames carry none.
        """
        sender, _ = makeSender()
        with capturedLogs() as events:
            protocol = connect(sender)
            sender.frameCaptured(b"x", 1.0)
        self.assertIsNone(protocol.frames[0].metadata)
        self.assertEqual([e for e in events if "metadata" in e.get("log_format", "")], [])

    def test_invalidMetadataRefused(self):
        """
        Metadata that breaks the wire rules is refused where it is given:
        the constructor and C{frameCaptured} raise C{ValueError}.
        """
        self.assertRaises(ValueError, makeSender, metadata="[1]")
        sender, _ = makeSender()
        connect(sender, self.TAKES)
        self.assertRaises(ValueError, sender.frameCaptured, b"x", 1.0, "not json")

    def test_nonFiniteCaptureTimeRefused(self):
        """
        A capture time that is not a finite number is refused where it is
        given: C{frameCaptured} raises C{ValueError}, and nothing is sent or
        held for it.
        """
        sender, _ = makeSender()
        protocol = connect(sender)
        for bad in (float("nan"), float("inf")):
            self.assertRaises(ValueError, sender.frameCaptured, b"x", bad)
        self.assertTrue(sender.frameCaptured(b"x", 1))
        self.assertEqual([(f.seq, f.captureTime) for f in protocol.frames], [(0, 1.0)])

    def test_metadataCountsTowardsTheLimit(self):
        """
        A frame whose JPEG fits the receiver's message limit but not with
        its metadata is not sent.
        """
        jpeg = b"j" * 100
        limit = wire.FRAME_OVERHEAD + len(jpeg) + 2 + len(self.FIXED)
        sender, _ = makeSender(metadata=self.FIXED)
        protocol = connect(
            sender, wire.Welcome(capabilities=wire.SCAP_METADATA, maxMessageBytes=limit)
        )
        self.assertTrue(sender.frameCaptured(jpeg, 1.0))
        with capturedLogs():
            self.assertFalse(sender.frameCaptured(jpeg + b"j", 1.0))
        self.assertEqual(protocol.seqs, [0])
        self.assertEqual(len(wire.encodeMessage(protocol.frames[0])), limit)
