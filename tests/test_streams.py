"""
Tests for L{imageproto.receiver.registry}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.wire import Refused
from tests.helpers import FAKE_JPEG, Rejected, deliver, receiverStack
from tests.helpers import RecordingConsumer
from imageproto.wire import checkStreamName


class FakeProtocol:
    def __init__(self):
        self.replacedCalls = 0
        self.failures = []

    def replaced(self):
        self.replacedCalls += 1

    def fail(self, code, reason):
        self.failures.append((code, reason))


def frame(seq, jpeg=FAKE_JPEG, captureTime=100.0, dropped=0):
    return wire.Frame(seq, jpeg, captureTime, captureTime + 0.001, dropped)


class NameTests(SynchronousTestCase):
    def test_goodNames(self):
        """
        Names of 1-64 letters, digits, dots, underscores and dashes pass.
        """
        for name in ("a", "cam-1", "front_door.left", "A" * 64, "0"):
            checkStreamName(name)

    def test_badNames(self):
        """
        Empty, too long, leading-dot, path-like and non-ASCII names are
        refused with ERR_BAD_NAME.
        """
        for name in ("", "a" * 65, ".", "..", ".hidden", "a/b", "..\\x", "a b",
                     "caf\u00e9", "x\n", "a:b"):
            e = self.assertRaises(Refused, checkStreamName, name)
            self.assertEqual(e.code, wire.ERR_BAD_NAME, name)
            self.assertIn(repr(name), e.reason)


def makeRegistry(clock, sinks=(), **options):
    """
    A registry whose listener is a pipeline handing frames to C{sinks}.
    """
    registry, pipeline = receiverStack(clock, sinks, **options)
    return registry


class RegistryTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.sink = RecordingConsumer()
        self.registry = makeRegistry(self.clock, [self.sink], maxStreams=2)

    def accept(self, stream, seq, **kw):
        return self.successResultOf(deliver(self.registry.listener, stream, frame(seq, **kw)))

    def test_attach(self):
        """
        C{attach} returns a connected stream and tells the sinks it started.
        """
        protocol = FakeProtocol()
        stream = self.registry.attach("cam", wire.CAP_LIVE, 7, protocol)
        self.assertEqual(
            (stream.name, stream.capabilities, stream.session, stream.protocol),
            ("cam", wire.CAP_LIVE, 7, protocol),
        )
        self.assertEqual(self.sink.events, [("started", "cam")])
        self.assertTrue(self.registry.snapshot()["streams"]["cam"]["connected"])

    def test_badName(self):
        """
        A bad name is refused and creates no stream.
        """
        e = self.assertRaises(
            Refused, self.registry.attach, "../etc", 0, 1, FakeProtocol()
        )
        self.assertEqual(e.code, wire.ERR_BAD_NAME)
        self.assertEqual(self.registry.snapshot(), {"streams": {}})

    def test_streamLimit(self):
        """
        With C{maxStreams} live streams, a new name is refused with
        ERR_STREAM_LIMIT, but a live name may still be replaced, and a slot
        frees when a stream detaches.
        """
        a = self.registry.attach("a", 0, 1, FakeProtocol())
        self.registry.attach("b", 0, 1, FakeProtocol())
        e = self.assertRaises(Refused, self.registry.attach, "c", 0, 1, FakeProtocol())
        self.assertEqual(e.code, wire.ERR_STREAM_LIMIT)
        self.assertIn("2", e.reason)
        self.registry.attach("b", 0, 1, FakeProtocol())
        self.registry.detach(a, a.protocol)
        self.registry.attach("c", 0, 1, FakeProtocol())

    def test_replacement(self):
        """
        A second connection under a live name replaces the first: the old
        protocol is told, the stream counts a reconnect, and the old
        protocol's later detach is ignored.
        """
        old, new = FakeProtocol(), FakeProtocol()
        stream = self.registry.attach("cam", 0, 1, old)
        again = self.registry.attach("cam", 0, 1, new)
        self.assertIs(again, stream)
        self.assertEqual((old.replacedCalls, new.replacedCalls), (1, 0))
        self.registry.detach(stream, old)
        self.assertIs(stream.protocol, new)
        stats = self.registry.snapshot()["streams"]["cam"]
        self.assertEqual(
            (stats["connections"], stats["reconnects"], stats["connected"]),
            (2, 1, True),
        )
        self.assertEqual(self.sink.events, [("started", "cam")])

    def test_detach(self):
        """
        Detaching the current protocol leaves the stream known but
        disconnected and tells the sinks it stopped.
        """
        protocol = FakeProtocol()
        stream = self.registry.attach("cam", 0, 1, protocol)
        self.clock.advance(3)
        self.registry.detach(stream, protocol)
        self.assertFalse(stream.connected)
        self.assertEqual(self.sink.events, [("started", "cam"), ("stopped", "cam")])
        self.assertFalse(self.registry.snapshot()["streams"]["cam"]["connected"])

    def test_frameReachesSinks(self):
        """
        An accepted frame reaches every sink as a L{ReceivedFrame} and is
        counted.
        """
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        self.accept(stream, 3, captureTime=999.5, dropped=2)
        [received] = self.sink.frames
        self.assertEqual(
            (received.stream, received.seq, received.jpeg, received.captureTime,
             received.sendTime, received.receiveTime, received.senderDropped),
            ("cam", 3, FAKE_JPEG, 999.5, 999.501, 1000.0, 2),
        )
        stats = self.registry.stats("cam")
        self.assertEqual(
            (stats.frames, stats.bytes, stats.dropped), (1, len(FAKE_JPEG), 2)
        )

    def test_duplicateAfterReconnect(self):
        """
        A frame resent in the same session after a reconnect is
        acknowledged without reaching the sinks again, and counted as a
        duplicate.
        """
        stream = self.registry.attach("cam", 0, 9, FakeProtocol())
        self.accept(stream, 0)
        self.accept(stream, 1)
        self.registry.detach(stream, stream.protocol)
        self.registry.attach("cam", 0, 9, FakeProtocol())
        self.accept(stream, 1)
        self.accept(stream, 2)
        self.assertEqual([f.seq for f in self.sink.frames], [0, 1, 2])
        stats = self.registry.stats("cam")
        self.assertEqual((stats.frames, stats.duplicates, stats.gaps), (3, 1, 0))

    def test_newSessionStartsFresh(self):
        """
        A new session under the same name numbers from 0 again: its frames
        reach the sinks and count neither as duplicates nor as gaps.
        """
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        for seq in range(5):
            self.accept(stream, seq)
        self.registry.attach("cam", 0, 2, FakeProtocol())
        for seq in range(3):
            self.accept(stream, seq)
        self.assertEqual(len(self.sink.frames), 8)
        stats = self.registry.snapshot()["streams"]["cam"]
        self.assertEqual(
            (stats["duplicates"], stats["gaps"], stats["connections"]), (0, 0, 2)
        )

    def test_duplicateMemoryBounded(self):
        """
        Numbers accepted out of order above the watermark are remembered,
        only the latest C{rememberSeqs} of them.
        """
        registry = makeRegistry(self.clock, [self.sink], rememberSeqs=4)
        stream = registry.attach("cam", 0, 1, FakeProtocol())
        for seq in range(10, 30, 2):
            deliver(registry.listener, stream, frame(seq))
        self.assertEqual(sorted(stream._accepted), [22, 24, 26, 28])
        self.assertEqual(stream.resumePoint, 0)
        deliver(registry.listener, stream, frame(28))
        deliver(registry.listener, stream, frame(12))
        self.assertEqual([f.seq for f in self.sink.frames][-1], 12)
        self.assertEqual(registry.stats("cam").duplicates, 1)

    def test_inOrderSessionRememberedWhole(self):
        """
        A session whose frames arrive in order is remembered whole by its
        watermark, however long: an early frame resent is still known, and
        the watermark is where a resumed sender goes on.
        """
        registry = makeRegistry(self.clock, [self.sink], rememberSeqs=4)
        stream = registry.attach("cam", 0, 1, FakeProtocol())
        for seq in range(2000):
            deliver(registry.listener, stream, frame(seq))
        self.assertEqual(stream.resumePoint, 2000)
        self.assertEqual(stream._accepted, set())
        deliver(registry.listener, stream, frame(3))
        self.assertEqual(len(self.sink.frames), 2000)
        self.assertEqual(registry.stats("cam").duplicates, 1)

    def test_watermarkFillsGaps(self):
        """
        A frame that fills a gap raises the watermark over the numbers
        already accepted above it.
        """
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        for seq in (0, 2, 3, 5):
            self.accept(stream, seq)
        self.assertEqual(stream.resumePoint, 1)
        self.accept(stream, 1)
        self.assertEqual(stream.resumePoint, 4)
        self.assertEqual(stream._accepted, {5})

    def test_ackWaitsForSinks(self):
        """
        The L{Deferred} fires only when every sink's L{Deferred} has; the
        frame is counted then.
        """
        slow = RecordingConsumer(hold=True)
        self.registry.listener.addConsumer(slow)
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        d = deliver(self.registry.listener, stream, frame(0))
        self.assertNoResult(d)
        self.assertEqual(self.registry.stats("cam").frames, 0)
        slow.pending[0].callback(None)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.registry.stats("cam").frames, 1)

    def test_duplicateWhilePending(self):
        """
        A copy of a frame still being accepted does not reach the sinks
        again; it shares the first copy's outcome.
        """
        slow = RecordingConsumer(hold=True)
        registry = makeRegistry(self.clock, [slow])
        stream = registry.attach("cam", 0, 1, FakeProtocol())
        first = deliver(registry.listener, stream, frame(0))
        second = deliver(registry.listener, stream, frame(0))
        self.assertEqual(len(slow.frames), 1)
        self.assertNoResult(second)
        slow.pending[0].callback(None)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(registry.stats("cam").duplicates, 1)

    def test_sinkFailure(self):
        """
        When a sink fails, the frame is rejected and the sink's own error is
        logged; the frame is not counted, and a resend is tried again.
        """
        slow = RecordingConsumer(hold=True)
        registry = makeRegistry(self.clock, [slow])
        stream = registry.attach("cam", 0, 1, FakeProtocol())
        d = deliver(registry.listener, stream, frame(0))
        slow.pending[0].errback(OSError("disk full"))
        self.failureResultOf(d, Rejected)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(registry.stats("cam").frames, 0)
        deliver(registry.listener, stream, frame(0))
        self.assertEqual(len(slow.frames), 2)

    def test_sinkRaises(self):
        """
        A sink raising synchronously fails the frame rather than the caller.
        """

        class Broken(RecordingConsumer):
            def frameReceived(self, frame):
                raise RuntimeError("broken")

        registry = makeRegistry(self.clock, [Broken()])
        stream = registry.attach("cam", 0, 1, FakeProtocol())
        self.failureResultOf(deliver(registry.listener, stream, frame(0)), Rejected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_sinksAcceptingAtOnceSettleAtOnce(self):
        """
        When no sink returns a L{Deferred}, the frame is accepted, counted
        and remembered before C{frameReceived} returns.
        """
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        d = deliver(self.registry.listener, stream, frame(0))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.registry.stats("cam").frames, 1)
        self.assertTrue(stream.wasAccepted(0))
        self.assertEqual(stream._pending, {})

    def test_sinkRaisesOthersStillCalled(self):
        """
        A sink raising fails the frame, but the sinks after it were still
        handed the frame, and the frame is not counted.
        """

        class Broken(RecordingConsumer):
            def frameReceived(self, frame):
                raise RuntimeError("broken")

        after = RecordingConsumer()
        registry = makeRegistry(self.clock, [Broken(), after])
        stream = registry.attach("cam", 0, 1, FakeProtocol())
        self.failureResultOf(deliver(registry.listener, stream, frame(0)), Rejected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([f.seq for f in after.frames], [0])
        self.assertEqual(registry.stats("cam").frames, 0)

    def test_frameRejected(self):
        """
        A frame that is not a JPEG is rejected and counted as rejected;
        sinks never see it.
        """
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        self.failureResultOf(
            deliver(self.registry.listener, stream, frame(0, jpeg=b"GIF89a")), Rejected
        )
        self.assertEqual(self.registry.stats("cam").rejected, 1)
        self.assertEqual(self.sink.frames, [])

    def test_idleStreamsForgotten(self):
        """
        Beyond C{maxIdle} disconnected streams, the one seen least recently
        is forgotten when a new name arrives.
        """
        registry = makeRegistry(self.clock, maxIdle=2)
        for name in ("a", "b", "c"):
            protocol = FakeProtocol()
            stream = registry.attach(name, 0, 1, protocol)
            self.clock.advance(1)
            registry.detach(stream, protocol)
        self.assertEqual(sorted(registry.snapshot()["streams"]), ["b", "c"])

    def test_statsUnknown(self):
        """
        C{stats} of an unknown name raises L{KeyError}.
        """
        self.assertRaises(KeyError, self.registry.stats, "nobody")

    def test_snapshot(self):
        """
        The snapshot holds every stream under its name, with the documented
        keys.
        """
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        self.accept(stream, 0, captureTime=999.99)
        self.clock.advance(1)
        snapshot = self.registry.snapshot()
        self.assertEqual(list(snapshot), ["streams"])
        cam = snapshot["streams"]["cam"]
        self.assertEqual(
            sorted(cam),
            sorted(["frames", "bytes", "fps", "latency_ms", "latency_corrected_ms",
                    "clock_offset_ms", "clock_error_ms", "gaps", "dropped",
                    "connections", "reconnects", "rejected", "storage_errors", "duplicates", "implausible_times",
                    "connected", "last_seen"]),
        )
        self.assertEqual(cam["last_seen"], 1000.0)
        self.assertAlmostEqual(cam["latency_ms"]["p50"], 10.0, places=3)

    def test_disconnectAllAndClose(self):
        """
        At shutdown every live protocol gets ERR_SHUTDOWN; the L{Deferred}
        fires once they have all detached, and every sink is closed.
        """
        live = FakeProtocol()
        gone = FakeProtocol()
        stream = self.registry.attach("a", 0, 1, live)
        other = self.registry.attach("b", 0, 1, gone)
        self.registry.detach(other, gone)
        d = self.registry.disconnectAll()
        self.assertEqual([code for code, _ in live.failures], [wire.ERR_SHUTDOWN])
        self.assertEqual(gone.failures, [])
        self.assertNoResult(d)
        self.registry.detach(stream, live)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.registry.listener.close())
        self.assertEqual(self.sink.closed, 1)

    def test_disconnectAllAborts(self):
        """
        A peer that has not gone within the grace period is aborted and the
        shutdown goes on.
        """
        from twisted.internet.testing import StringTransport

        stuck = FakeProtocol()
        stuck.transport = StringTransport()
        self.registry.attach("a", 0, 1, stuck)
        d = self.registry.disconnectAll(grace=2.0)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertTrue(stuck.transport.disconnecting)

    def test_disconnectAllNone(self):
        """
        With no live streams, C{disconnectAll} fires at once.
        """
        self.successResultOf(self.registry.disconnectAll())


class _AttachLog:
    def __init__(self, fail=False):
        self.events = []
        self.fail = fail

    def streamAttached(self, stream, protocol):
        self.events.append(("attached", stream.name, protocol))
        if self.fail:
            raise RuntimeError("listener bug")

    def streamDetached(self, stream, protocol):
        self.events.append(("detached", stream.name, protocol))


class AttachListenerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = makeRegistry(self.clock, [RecordingConsumer()])

    def test_toldOfEachAttachAndOfTheCurrentConnectionsDetach(self):
        """
        An attach listener hears of every accepted HELLO, a replacing one
        included, and of the detach of the current connection only (a
        replaced connection closing later is not reported).
        """
        log = _AttachLog()
        self.registry.addAttachListener(log)
        first, second = FakeProtocol(), FakeProtocol()
        stream = self.registry.attach("cam", 0, 1, first)
        self.registry.attach("cam", 0, 1, second)
        self.registry.detach(stream, first)
        self.registry.detach(stream, second)
        self.assertEqual(
            log.events,
            [("attached", "cam", first), ("attached", "cam", second), ("detached", "cam", second)],
        )

    def test_failingListenerDoesNotRefuseTheHello(self):
        """
        A listener that raises is logged; the stream is attached all the same.
        """
        self.registry.addAttachListener(_AttachLog(fail=True))
        stream = self.registry.attach("cam", 0, 1, FakeProtocol())
        self.assertTrue(stream.connected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
