"""
Tests for L{imageproto.sender.flow}: the window, drops, waits, resends and the
summary, with plain calls and a fake clock.
"""

from twisted.internet.defer import CancelledError
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
        A live sender's HELLO carries its name, its session, CAP_LIVE and
        CAP_RESULTS.
        """
        sender, _ = makeSender(live=True)
        self.assertEqual(
            sender.hello(), wire.Hello("cam", wire.CAP_LIVE | wire.CAP_RESULTS, 42)
        )

    def test_finiteHello(self):
        """
        A finite source's HELLO does not claim CAP_LIVE.
        """
        sender, _ = makeSender(live=False)
        self.assertEqual(sender.hello().capabilities, wire.CAP_RESULTS)

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
        end of the run.
        """
        sender, _ = makeSender()
        connect(sender)
        sender.frameCaptured(b"0", 0)
        sender.sourceExhausted()
        with capturedLogs() as events:
            sender.rejected(0, "not a JPEG")
        summary = self.successResultOf(sender.whenDone())
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
