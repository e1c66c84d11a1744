"""
Tests for L{imageproto.sender.service} and the sender end of the wire: the capture
loop on a fake clock with a fake thread, reconnect timing on a
MemoryReactorClock, and L{FrameSenderProtocol} with a StringTransport.
"""

import struct

from twisted.internet.defer import succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.sender.sources import CaptureError
from imageproto.protocol.factories import SenderFactory
from imageproto.sender.flow import FrameSender, SenderFailed
from imageproto.sender.service import CaptureService, SenderConnectionService, SenderService
from imageproto.testing import (
    FakeSenderProtocol,
    FakeThreadRunner,
    PassthroughEncoder,
    ScriptedSource,
)
from tests.helpers import framed, messages


class CaptureHarness:
    """
    A CaptureService over a scripted source, a fake thread and a Clock,
    feeding a real FrameSender.
    """

    def __init__(self, script, live=False, fps=10.0, window=8, count=0, connect=True, **kw):
        self.clock = Clock()
        self.threads = FakeThreadRunner()
        self.source = ScriptedSource(script, live=live, **kw)
        self.sender = FrameSender("cam", live, self.clock, window=window, session=1)
        self.protocol = FakeSenderProtocol()
        if connect:
            self.sender.connected(self.protocol, wire.Welcome())
        self.service = CaptureService(
            self.source,
            self.sender,
            fps,
            PassthroughEncoder(),
            runInThread=self.threads,
            clock=self.clock,
            count=count,
        )

    def start(self):
        self.service.startService()
        self.threads.runNext()  # open


class CaptureServiceTests(SynchronousTestCase):
    def test_opensInThreadThenCaptures(self):
        """
        Starting opens the source through runInThread; once that fires the
        first tick asks the thread for a frame, whose bytes are sent.
        """
        h = CaptureHarness([b"f0", b"f1"])
        h.service.startService()
        self.assertEqual(h.source.opened, 0)
        h.threads.runNext()
        self.assertEqual(h.source.opened, 1)
        self.assertEqual(len(h.threads.calls), 1)
        h.threads.runNext()
        self.assertEqual([f.jpeg for f in h.protocol.frames], [b"f0"])

    def test_paced(self):
        """
        Frames are captured one interval apart, and never two at once.
        """
        h = CaptureHarness([b"f0", b"f1", b"f2"], fps=10.0)
        h.start()
        h.clock.advance(0.5)
        self.assertEqual(len(h.threads.calls), 1)
        h.threads.runNext()
        self.assertEqual(h.threads.calls, [])
        h.clock.advance(0.5)
        self.assertEqual(len(h.threads.calls), 1)
        h.threads.runNext()
        self.assertEqual(h.protocol.seqs, [0, 1])

    def test_nativeFps(self):
        """
        Without an fps, the source's own rate paces the loop; an fps of 0
        means no pause between captures.
        """
        clock = Clock()
        service = CaptureService(ScriptedSource([], fps=25.0), None, None, None, clock=clock)
        self.assertEqual(service.interval, 0.04)
        service = CaptureService(ScriptedSource([], fps=25.0), None, 0, None, clock=clock)
        self.assertEqual(service.interval, 0.0)

    def test_finiteWaitsForWindow(self):
        """
        A finite source is not read while the window is full: no capture is
        asked for until an ACK makes room.
        """
        h = CaptureHarness([b"a", b"b", b"c"], window=2, fps=0)
        h.start()
        h.threads.runAll()
        h.clock.advance(0)
        h.threads.runAll()
        h.clock.advance(0)
        self.assertEqual(h.source.reads, 2)
        self.assertEqual(h.threads.calls, [])
        h.clock.advance(1)
        self.assertEqual(h.threads.calls, [])
        h.sender.acked(0)
        h.clock.advance(0)
        h.threads.runAll()
        self.assertEqual(h.protocol.seqs, [0, 1, 2])

    def test_liveReadsAndDrops(self):
        """
        A live source is read every tick even with no server; its frames
        are dropped and do not count towards C{count}.
        """
        h = CaptureHarness([b"a"], live=True, connect=False, count=2, fps=10.0)
        h.start()
        for _ in range(3):
            h.threads.runNext()
            h.clock.advance(0.1)
        self.assertEqual(h.source.reads, 3)
        self.assertEqual(h.sender.summary().dropped, 3)
        self.assertEqual(h.service.frames, 0)

    def test_endOfSourceFinishes(self):
        """
        At the end of a finite source the loop stops and, once the frames
        are acknowledged, the sender is done.
        """
        h = CaptureHarness([b"a", b"b"], fps=0)
        h.start()
        for _ in range(3):
            h.threads.runAll()
            h.clock.advance(0)
        self.assertEqual(h.source.reads, 3)
        self.assertFalse(h.service._loop.running)
        d = h.sender.whenDone()
        h.sender.acked(0)
        h.sender.acked(1)
        self.assertEqual(self.successResultOf(d).acknowledged, 2)
        self.assertEqual(h.protocol.goodbyes, ["done"])

    def test_count(self):
        """
        With C{count}, capture stops after that many frames were taken.
        """
        h = CaptureHarness([b"a"], live=True, count=2, fps=0)
        h.start()
        for _ in range(2):
            h.threads.runAll()
            h.clock.advance(0)
        self.assertEqual(h.threads.calls, [])
        self.assertEqual(h.protocol.seqs, [0, 1])
        self.assertFalse(h.service._loop.running)

    def captureWithErrors(self, live):
        h = CaptureHarness(
            [CaptureError("cannot read x.jpg"), CaptureError("cannot read y.jpg"), b"ok"],
            live=live,
            fps=0,
        )
        with capturedLogs() as events:
            h.start()
            for _ in range(3):
                h.threads.runAll()
                h.clock.advance(0)
        warnings = [e["error"] for e in events if e["log_level"].name == "warn"]
        return h.protocol.frames, warnings

    def test_unreadableFilesSkipped(self):
        """
        Each frame of a finite source that cannot be read is warned about
        with its reason (naming the file), and the loop carries on.
        """
        frames, warnings = self.captureWithErrors(live=False)
        self.assertEqual([f.jpeg for f in frames], [b"ok"])
        self.assertEqual(warnings, ["cannot read x.jpg", "cannot read y.jpg"])

    def test_liveFailuresWarnedOnce(self):
        """
        A live source failing tick after tick is warned about once, and the
        loop carries on until it delivers again.
        """
        frames, warnings = self.captureWithErrors(live=True)
        self.assertEqual([f.jpeg for f in frames], [b"ok"])
        self.assertEqual(warnings, ["cannot read x.jpg"])

    def test_openFailureFails(self):
        """
        A source that cannot be opened fails the sender with the reason.
        """
        h = CaptureHarness([], openError=CaptureError("no camera 3"))
        d = h.sender.whenDone()
        with capturedLogs():
            h.start()
        self.assertIn("no camera 3", self.failureResultOf(d, SenderFailed).value.reason)

    def test_missedTicks(self):
        """
        A capture that outlasts its interval is counted in missedTicks.
        """
        h = CaptureHarness([b"a", b"b"], live=True, fps=10.0)
        h.start()
        h.clock.advance(0.35)
        h.threads.runNext()
        h.clock.advance(0.1)
        self.assertEqual(h.service.missedTicks, 3)

    def test_stopWaitsAndCloses(self):
        """
        Stopping waits for the capture in progress, then closes the source
        in the thread.
        """
        h = CaptureHarness([b"a"], live=True)
        h.start()
        d = h.service.stopService()
        self.assertNoResult(d)
        h.threads.runNext()  # the capture in progress
        self.assertNoResult(d)
        h.threads.runNext()  # close
        self.successResultOf(d)
        self.assertEqual(h.source.closed, 1)

    def test_stopCancelsWait(self):
        """
        Stopping a finite capture that waits for the network cancels the
        wait and closes the source.
        """
        h = CaptureHarness([b"a"], connect=False)
        h.start()
        self.assertEqual(h.threads.calls, [])
        d = h.service.stopService()
        h.threads.runAll()
        self.successResultOf(d)
        self.assertEqual((h.source.reads, h.source.closed), (0, 1))


class ReconnectTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sender = FrameSender("cam", False, self.reactor, session=1)
        self.factory = SenderFactory(
            self.sender, clock=self.reactor, maxDelay=4.0, initialDelay=1.0
        )
        self.factory.jitter = 0
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 8080)
        self.service = SenderConnectionService(
            endpoint, self.factory, "tcp:127.0.0.1:8080", self.reactor
        )

    def refuseLatest(self):
        host, port, factory, timeout, bind = self.reactor.tcpClients[-1]
        connector = self.reactor.connectors[-1]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))

    def acceptLatest(self):
        factory = self.reactor.tcpClients[-1][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def attemptTimes(self, failures):
        times = []
        with capturedLogs():
            self.service.startService()
            for _ in range(failures):
                times.append(self.reactor.seconds())
                self.refuseLatest()
                self.reactor.advance(self.reactor.getDelayedCalls()[0].getTime() - self.reactor.seconds())
        return times

    def test_backoffCapped(self):
        """
        Refused attempts are retried after growing delays, capped at
        maxDelay.
        """
        times = self.attemptTimes(5)
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
        self.assertEqual(gaps, [1.0, 2.718, 4.0, 4.0])
        self.assertEqual(len(self.reactor.tcpClients), 6)

    def test_jitterStaysUnderCap(self):
        """
        With jitter, no wait exceeds maxDelay.
        """
        self.factory.jitter = 0.5
        times = self.attemptTimes(30)
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertLessEqual(max(gaps), 4.0 + 1e-9)

    def test_maxRetriesFailsSender(self):
        """
        After maxRetries failed retries the factory stops and the sender
        fails with the last error.
        """
        self.factory.maxRetries = 2
        d = self.sender.whenDone()
        with capturedLogs():
            self.service.startService()
            for _ in range(3):
                self.refuseLatest()
                self.reactor.advance(10)
        self.assertEqual(len(self.reactor.tcpClients), 3)
        reason = self.failureResultOf(d, SenderFailed).value.reason
        self.assertIn("gave up after 2 retries", reason)
        self.assertIn("refused", reason)

    def test_welcomeResetsDelay(self):
        """
        A WELCOME resets the backoff: after losing a welcomed connection the
        first retry waits initialDelay again.
        """
        self.attemptTimes(3)
        protocol, transport = self.acceptLatest()
        protocol.dataReceived(framed(wire.Welcome()))
        self.assertEqual(self.factory.delay, 1.0)
        with capturedLogs():
            protocol.connectionLost(Failure(ConnectionError("reset")))
        (call,) = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime() - self.reactor.seconds(), 1.0)

    def test_stopServiceStopsTrying(self):
        """
        Stopping the service calls stopTrying before disconnecting: no
        attempt is scheduled afterwards, and the connection closes.
        """
        self.attemptTimes(1)
        protocol, transport = self.acceptLatest()
        protocol.dataReceived(framed(wire.Welcome()))
        with capturedLogs():
            d = self.service.stopService()
            self.assertFalse(self.factory.continueTrying)
            self.assertTrue(transport.disconnecting)
            self.assertIsInstance(messages(transport.value())[-1], wire.Bye)
            protocol.connectionLost(Failure(ConnectionError("closed")))
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopServiceAbortsAfterTimeout(self):
        """
        A connection that does not close within closeTimeout is aborted.
        """
        with capturedLogs():
            self.service.startService()
        protocol, transport = self.acceptLatest()
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)
        d = self.service.stopService()
        self.reactor.advance(self.service.closeTimeout)
        self.assertEqual(aborted, [True])
        self.assertNoResult(d)

    def test_stopServiceWhileConnecting(self):
        """
        Stopping during a connection attempt cancels it.
        """
        with capturedLogs():
            self.service.startService()
            d = self.service.stopService()
        self.successResultOf(d)
        self.assertEqual(self.reactor.connectors[-1].stoppedConnecting, True)


class FailoverTests(SynchronousTestCase):
    """
    A sender given several receivers tries them in turn.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sender = FrameSender("cam", False, self.reactor, session=1)
        self.factory = SenderFactory(
            self.sender, clock=self.reactor, maxDelay=4.0, initialDelay=1.0
        )
        self.factory.jitter = 0
        ports = [8080, 8081, 8082]
        self.service = SenderConnectionService(
            [TCP4ClientEndpoint(self.reactor, "127.0.0.1", p) for p in ports],
            self.factory,
            [f"tcp:127.0.0.1:{p}" for p in ports],
            self.reactor,
        )

    def ports(self):
        return [client[1] for client in self.reactor.tcpClients]

    def refuseLatest(self):
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(
            self.reactor.connectors[-1], Failure(ConnectionRefusedError())
        )

    def acceptLatest(self):
        factory = self.reactor.tcpClients[-1][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(framed(wire.Welcome()))
        return protocol, transport

    def test_failedAttemptMovesOnAtOnce(self):
        """
        A refused attempt is followed at once by an attempt on the next
        receiver, until every receiver of the round has been tried; only
        then does the factory back off.
        """
        with capturedLogs():
            self.service.startService()
            self.refuseLatest()
            self.refuseLatest()
            self.assertEqual(self.ports(), [8080, 8081, 8082])
            self.assertEqual(self.reactor.getDelayedCalls(), [])
            self.refuseLatest()
        (call,) = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime() - self.reactor.seconds(), 1.0)
        self.assertEqual(self.factory.retries, 1)

    def test_roundsBackOff(self):
        """
        Whole rounds that fail are separated by the factory's growing
        delays, and each round goes on where the last one ended (the
        endpoints are tried round robin).
        """
        times = []
        with capturedLogs():
            self.service.startService()
            for _ in range(3):
                times.append(self.reactor.seconds())
                self.refuseLatest()
                self.refuseLatest()
                self.refuseLatest()
                self.reactor.advance(
                    self.reactor.getDelayedCalls()[0].getTime() - self.reactor.seconds()
                )
        self.assertEqual(self.ports(), [8080, 8081, 8082] * 3 + [8080])
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
        self.assertEqual(gaps, [1.0, 2.718])

    def test_lostConnectionGoesToNextReceiver(self):
        """
        After an established connection is lost, the next attempt goes to
        the next receiver, after the reset delay.
        """
        with capturedLogs():
            self.service.startService()
            self.refuseLatest()
            protocol, transport = self.acceptLatest()
            self.assertEqual(self.ports(), [8080, 8081])
            protocol.connectionLost(Failure(ConnectionError("reset")))
            self.reactor.advance(1.0)
        self.assertEqual(self.ports(), [8080, 8081, 8082])

    def test_maxRetriesCountsRounds(self):
        """
        maxRetries counts failed rounds, not single attempts.
        """
        self.factory.maxRetries = 1
        d = self.sender.whenDone()
        with capturedLogs():
            self.service.startService()
            for _ in range(2):
                for _ in range(3):
                    self.refuseLatest()
                self.reactor.advance(10)
        self.assertEqual(len(self.reactor.tcpClients), 6)
        reason = self.failureResultOf(d, SenderFailed).value.reason
        self.assertIn("gave up after 1 retries", reason)

    def test_unackedFramesResentToNextReceiver(self):
        """
        Frames of a finite source not acknowledged by the receiver that went
        away are sent again, under their sequence numbers, to the next one.
        """
        with capturedLogs():
            self.service.startService()
            first, firstTransport = self.acceptLatest()
            self.sender.frameCaptured(b"jpeg-0", 1.0)
            self.sender.frameCaptured(b"jpeg-1", 2.0)
            first.dataReceived(framed(wire.Ack(0)))
            first.connectionLost(Failure(ConnectionError("killed")))
            self.reactor.advance(1.0)
            second, secondTransport = self.acceptLatest()
        self.assertEqual(self.ports(), [8080, 8081])
        frames = [m for m in messages(secondTransport.value()) if isinstance(m, wire.Frame)]
        self.assertEqual([(f.seq, f.jpeg) for f in frames], [(1, b"jpeg-1")])

    def test_stopServiceDuringRound(self):
        """
        Stopping while the second receiver is being tried cancels that
        attempt and starts no other.
        """
        with capturedLogs():
            self.service.startService()
            self.refuseLatest()
            d = self.service.stopService()
        self.successResultOf(d)
        self.assertEqual(self.ports(), [8080, 8081])
        self.assertTrue(self.reactor.connectors[-1].stoppedConnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class SenderProtocolTests(SynchronousTestCase):
    """
    L{imageproto.protocol.framing.FrameSenderProtocol} with a real FrameSender.
    """

    def setUp(self):
        self.clock = Clock()
        self.sender = FrameSender("cam", False, self.clock, session=7)
        self.factory = SenderFactory(self.sender, clock=self.clock)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_helloOnConnect(self):
        """
        Connecting sends the sender's HELLO, and nothing else.
        """
        self.assertEqual(messages(self.transport.value()), [wire.Hello("cam", wire.CAP_RESULTS | wire.CAP_RETRY | wire.CAP_CLOCK, 7)])

    def test_welcomeStartsSending(self):
        """
        After WELCOME, frames offered are sent, and resent ones too.
        """
        self.sender.frameCaptured(b"\xff\xd8\xffheld\xff\xd9", 1.0)
        self.transport.clear()
        self.protocol.dataReceived(framed(wire.Welcome()))
        (frame,) = messages(self.transport.value())
        self.assertEqual((frame.seq, frame.jpeg), (0, b"\xff\xd8\xffheld\xff\xd9"))
        self.assertIs(self.sender.protocol, self.protocol)

    def test_ackSettles(self):
        """
        An ACK from the server reaches the sender.
        """
        self.protocol.dataReceived(framed(wire.Welcome()))
        self.sender.frameCaptured(b"x", 0)
        self.protocol.dataReceived(framed(wire.Ack(0)))
        self.assertEqual(self.sender.summary().acknowledged, 1)

    def test_errorBeforeWelcomeRefuses(self):
        """
        An ERROR before WELCOME is a refusal: the sender fails for good and
        the connection closes.
        """
        d = self.sender.whenDone()
        with capturedLogs():
            self.protocol.dataReceived(framed(wire.Error(wire.ERR_BAD_NAME, "bad name")))
        self.failureResultOf(d, SenderFailed)
        self.assertTrue(self.transport.disconnecting)

    def test_garbageDisconnects(self):
        """
        A malformed message from the server closes the connection with an
        ERROR and is logged naming the peer; the sender is not failed.
        """
        with capturedLogs() as events:
            self.protocol.dataReceived(struct.pack("!I", 3) + b"\x01\xee\x00")
        self.assertTrue(self.transport.disconnecting)
        self.assertIsInstance(messages(self.transport.value())[-1], wire.Error)
        self.assertTrue(any("malformed" in e["log_format"] for e in events))
        self.assertFalse(self.sender.finished)

    def test_unexpectedMessageDisconnects(self):
        """
        A FRAME from the server is a protocol violation: disconnect.
        """
        self.protocol.dataReceived(framed(wire.Welcome()))
        with capturedLogs():
            self.protocol.dataReceived(framed(wire.Frame(0, b"x")))
        self.assertTrue(self.transport.disconnecting)


class SenderServiceTests(SynchronousTestCase):
    def makeService(self):
        clock = MemoryReactorClock()
        sender = FrameSender("cam", False, clock, session=1)
        factory = SenderFactory(sender, clock=clock)
        connection = SenderConnectionService(
            TCP4ClientEndpoint(clock, "127.0.0.1", 1), factory, "tcp:127.0.0.1:1", clock
        )
        capture = CaptureService(
            ScriptedSource([b"a"]), sender, 0, PassthroughEncoder(),
            runInThread=lambda f, *a: succeed(None), clock=clock,
        )
        codes = []
        return SenderService(sender, connection, capture, codes.append), sender, codes

    def test_exitZeroWhenDone(self):
        """
        The service reports exit status 0 when the sender is done.
        """
        service, sender, codes = self.makeService()
        with capturedLogs():
            service.startService()
            sender.connected(FakeSenderProtocol(), wire.Welcome())
            sender.sourceExhausted()
        self.assertEqual((codes, service.exitCode), ([0], 0))

    def test_exitNonZeroOnFailure(self):
        """
        The service reports exit status 1 when the sender fails for good.
        """
        service, sender, codes = self.makeService()
        with capturedLogs():
            service.startService()
            sender.fail("refused")
        self.assertEqual(codes, [1])

    def test_earlyStopLogsSummary(self):
        """
        Stopped before the end (Ctrl-C), the service logs what was done.
        """
        service, sender, codes = self.makeService()
        with capturedLogs() as events:
            service.startService()
            service.stopService()
        self.assertIn("stopped early", [e.get("outcome") for e in events])
        self.assertEqual(codes, [])
