"""
Tests for the clock-offset exchange: the arithmetic and filter in
L{imageproto.wire.clock}, the receiver's L{imageproto.protocol.clock.ClockProbe},
both protocols' timed PONGs, and the corrected latency in the statistics, on
task.Clock and in-memory connections.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto import wire
from imageproto.protocol.clock import BURST, BURST_INTERVAL, ClockProbe, SkewedClock
from imageproto.protocol.factories import ReceiverFactory, SenderFactory
from imageproto.receiver.stats import StreamStats
from imageproto.sender.flow import FrameSender
from imageproto.tap import freePort, listening
from imageproto.testing import waitFor
from tests.helpers import FAKE_JPEG, StubRegistry, TwistdProcesses, framed, receiverStack


def written(transport: StringTransport) -> list:
    data, messages = transport.value(), []
    while data:
        size = wire.decodeLength(data[:4])
        messages.append(wire.decodeMessage(data[4 : 4 + size]))
        data = data[4 + size :]
    return messages


class ClockSampleTests(SynchronousTestCase):
    """
    L{wire.clockSample} is NTP's on-wire arithmetic.
    """

    def test_symmetricDelay(self):
        """
        With equal delays each way the offset is exact, and the round trip
        excludes the time the peer held the PING.
        """
        # Our clock: PING out at 100.000, PONG back at 100.003.  The peer's
        # clock is 300 s behind; it held the PING 1 ms.
        sample = wire.clockSample(100.000, -199.999, -199.998, 100.003)
        self.assertAlmostEqual(sample.offset, -300.0, places=9)
        self.assertAlmostEqual(sample.roundTrip, 0.002, places=9)
        self.assertAlmostEqual(sample.error, 0.001, places=9)
        self.assertEqual(sample.at, 100.003)

    def test_asymmetricDelayWithinBound(self):
        """
        However the round trip splits between the directions, the true
        offset is within the error bound of the estimate.
        """
        true = 42.5
        for outbound in (0.0, 0.001, 0.004, 0.005):
            t1 = 10.0
            t2 = t1 + outbound + true
            t3 = t2 + 0.0005
            t4 = t3 - true + (0.005 - outbound)
            sample = wire.clockSample(t1, t2, t3, t4)
            self.assertAlmostEqual(sample.roundTrip, 0.005, places=9)
            self.assertLessEqual(abs(sample.offset - true), sample.error + 1e-12)

    def test_backwardsRefused(self):
        """
        An exchange in which either clock ran backwards (it was stepped)
        raises L{ValueError}; so do non-finite times.
        """
        self.assertRaises(ValueError, wire.clockSample, 10.0, 5.0, 6.0, 9.0)
        self.assertRaises(ValueError, wire.clockSample, 10.0, 6.0, 5.0, 11.0)
        self.assertRaises(ValueError, wire.clockSample, float("nan"), 6.0, 7.0, 11.0)

    def test_negativeRoundTripIsZero(self):
        """
        A peer whose hold time reads longer than the round trip (its clock
        runs fast) gives a round trip of 0, not less.
        """
        sample = wire.clockSample(10.0, 20.0, 20.01, 10.005)
        self.assertEqual(sample.roundTrip, 0.0)

    def test_answerPing(self):
        """
        L{wire.answerPing} answers with the plain PONG unless the connection
        agreed on the clock exchange, and then with both times.
        """
        ping = wire.Ping(7)
        self.assertEqual(wire.answerPing(ping, False, 1.0, 2.0), wire.Pong(7))
        self.assertEqual(wire.answerPing(ping, True, 1.0, 2.0), wire.Pong(7, 1.0, 2.0))

    def test_clockAgreed(self):
        """
        Timed PONGs need CAP_CLOCK in HELLO and SCAP_CLOCK in WELCOME.
        """
        self.assertTrue(wire.clockAgreed(wire.CAP_CLOCK, wire.SCAP_CLOCK))
        self.assertFalse(wire.clockAgreed(wire.CAP_CLOCK, 0))
        self.assertFalse(wire.clockAgreed(0, wire.SCAP_CLOCK))


def sample(offset: float, roundTrip: float, at: float) -> wire.ClockSample:
    return wire.ClockSample(offset, roundTrip, at)


class ClockFilterTests(SynchronousTestCase):
    """
    L{wire.ClockFilter} keeps the best of recent samples.
    """

    def test_empty(self):
        """
        Before any sample there is no estimate.
        """
        self.assertIsNone(wire.ClockFilter().best(0.0))

    def test_smallestRoundTripWins(self):
        """
        Of several samples, the one with the smallest round trip gives the
        estimate, whatever the order they came in.
        """
        f = wire.ClockFilter(drift=0.0)
        f.add(sample(5.010, 0.020, 1.0))
        f.add(sample(5.0005, 0.001, 2.0))
        f.add(sample(4.990, 0.030, 3.0))
        best = f.best(3.0)
        self.assertEqual(
            (best.offset, best.error, best.roundTrip, best.samples), (5.0005, 0.0005, 0.001, 3)
        )

    def test_windowForgetsOldSamples(self):
        """
        Only the last C{window} samples count: a good sample older than
        that is forgotten.
        """
        f = wire.ClockFilter(window=3, drift=0.0)
        f.add(sample(1.0, 0.001, 1.0))
        for i in range(3):
            f.add(sample(2.0, 0.010, 2.0 + i))
        self.assertEqual(f.best(5.0).offset, 2.0)
        self.assertEqual(len(f), 3)

    def test_errorGrowsWithAge(self):
        """
        The bound grows by the drift rate times the chosen sample's age, so a
        fresh sample beats an old one of similar quality.
        """
        f = wire.ClockFilter(drift=1e-3)
        f.add(sample(1.0, 0.002, 0.0))
        self.assertAlmostEqual(f.best(10.0).error, 0.001 + 0.01)
        f.add(sample(1.5, 0.004, 10.0))
        self.assertEqual(f.best(10.0).offset, 1.5)


class ClockProbeTests(SynchronousTestCase):
    """
    L{ClockProbe} PINGs in a burst, times each PING and turns timed PONGs
    into samples; all on a L{Clock}.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.tokens = iter(range(1, 1000))
        self.sent = []
        self.samples = []
        self.probe = ClockProbe(self.clock, self.ping, self.samples.append)

    def ping(self):
        token = next(self.tokens)
        self.probe.pinged(token)
        self.sent.append((token, self.clock.seconds()))

    def test_burst(self):
        """
        L{ClockProbe.start} PINGs at once, and BURST times in all,
        BURST_INTERVAL apart, and then nothing more without an interval.
        """
        self.probe.start()
        self.assertEqual(len(self.sent), 1)
        self.clock.pump([BURST_INTERVAL] * (BURST + 3))
        self.assertEqual(len(self.sent), BURST)
        self.assertLess(self.sent[-1][1] - self.sent[0][1], 1.0)

    def test_interval(self):
        """
        With an interval, the probe keeps PINGing after the burst.
        """
        probe = ClockProbe(self.clock, self.ping, self.samples.append, interval=2.0)
        self.probe = probe
        probe.start()
        self.clock.pump([BURST_INTERVAL] * BURST + [2.0] * 3)
        self.assertEqual(len(self.sent), BURST + 3)
        probe.stop()
        self.clock.pump([2.0] * 3)
        self.assertEqual(len(self.sent), BURST + 3)

    def test_stopCancelsBurst(self):
        """
        L{ClockProbe.stop} cancels the PINGs not yet sent.
        """
        self.probe.start()
        self.probe.stop()
        self.clock.pump([BURST_INTERVAL] * BURST)
        self.assertEqual(len(self.sent), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timedPongMakesSample(self):
        """
        A timed PONG answering one of our PINGs gives a sample from our send
        and receive times and its two.
        """
        self.probe.start()
        [(token, t1)] = self.sent
        self.clock.advance(0.004)
        result = self.probe.ponged(wire.Pong(token, t1 - 60 + 0.002, t1 - 60 + 0.0025))
        self.assertEqual(self.samples, [result])
        self.assertAlmostEqual(result.offset, -59.99975, places=6)
        self.assertAlmostEqual(result.roundTrip, 0.0035, places=6)

    def test_ignoredPongs(self):
        """
        An untimed PONG, one answering no PING of ours, a second PONG for
        the same PING and one whose times run backwards give no sample.
        """
        self.probe.start()
        self.clock.advance(BURST_INTERVAL)
        [(first, t1), (second, _)] = self.sent
        self.assertIsNone(self.probe.ponged(wire.Pong(first)))
        self.assertIsNone(self.probe.ponged(wire.Pong(999, 1.0, 1.0)))
        self.assertIsNone(self.probe.ponged(wire.Pong(first, 1.0, 1.0)))
        self.assertIsNone(self.probe.ponged(wire.Pong(second, 2.0, 1.0)))
        self.assertEqual(self.samples, [])

    def test_outstandingBounded(self):
        """
        Only the latest PINGs are remembered: a PONG to a long-forgotten one
        gives nothing.
        """
        for token in range(1, 101):
            self.probe.pinged(token)
        self.assertIsNone(self.probe.ponged(wire.Pong(1, 1000.0, 1000.0)))
        self.assertIsNotNone(self.probe.ponged(wire.Pong(100, 1000.0, 1000.0)))


class SkewedClockTests(SynchronousTestCase):
    """
    L{SkewedClock} reads off by its skew and schedules on its inner clock.
    """

    def test_secondsAndCalls(self):
        """
        C{seconds()} is the inner clock's plus the skew; delayed calls run
        on the inner clock after the same delay.
        """
        inner = Clock()
        inner.advance(500)
        skewed = SkewedClock(inner, -300.0)
        self.assertEqual(skewed.seconds(), 200.0)
        calls = []
        skewed.callLater(1.5, calls.append, "ran")
        self.assertEqual(len(skewed.getDelayedCalls()), 1)
        inner.advance(1.5)
        self.assertEqual(calls, ["ran"])


CLOCK_HELLO = wire.Hello("cam-1", wire.CAP_LIVE | wire.CAP_CLOCK, 77)


def receiver(heartbeat: int = 0):
    clock = Clock()
    clock.advance(1000)
    registry = StubRegistry(clock)
    factory = ReceiverFactory(registry, clock, pipeline=registry, heartbeat=heartbeat)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, registry, clock


class ReceiverClockTests(SynchronousTestCase):
    """
    The receiving protocol's side of the exchange.
    """

    def test_welcomeAndPing(self):
        """
        A HELLO with CAP_CLOCK is answered by WELCOME with SCAP_CLOCK and a
        PING straight after; a timed PONG to it reaches the registry as a
        sample.
        """
        proto, transport, registry, clock = receiver()
        proto.dataReceived(framed(CLOCK_HELLO))
        welcome, ping = written(transport)
        self.assertEqual(welcome.capabilities, wire.SCAP_CLOCK)
        self.assertIsInstance(ping, wire.Ping)
        clock.advance(0.002)
        proto.dataReceived(framed(wire.Pong(ping.token, 1300.0009, 1300.001)))
        [(name, sample)] = registry.clockSamples
        self.assertEqual(name, "cam-1")
        self.assertAlmostEqual(sample.offset, 299.99995, places=6)
        self.assertAlmostEqual(sample.roundTrip, 0.0019, places=6)

    def test_burstThenHeartbeat(self):
        """
        After the burst the heartbeat's PINGs are timed too, and tokens never
        repeat.
        """
        proto, transport, registry, clock = receiver(heartbeat=2)
        proto.dataReceived(framed(CLOCK_HELLO))
        clock.pump([BURST_INTERVAL] * BURST + [2.0] * 2)
        pings = [m for m in written(transport) if isinstance(m, wire.Ping)]
        self.assertEqual(len(pings), BURST + 2)
        self.assertEqual(len({p.token for p in pings}), len(pings))
        for ping in pings:
            proto.dataReceived(framed(wire.Pong(ping.token, 5.0, 5.0)))
        self.assertEqual(len(registry.clockSamples), BURST + 2)

    def test_noClockWithoutCapability(self):
        """
        A HELLO without CAP_CLOCK gets no SCAP_CLOCK and no PINGs but the
        heartbeat's; its PINGs are answered with the plain 10-byte PONG.
        """
        proto, transport, registry, clock = receiver()
        proto.dataReceived(framed(wire.Hello("cam-1", wire.CAP_LIVE, 77)))
        self.assertEqual(written(transport), [wire.Welcome()])
        transport.clear()
        clock.pump([BURST_INTERVAL] * BURST)
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(framed(wire.Ping(3)))
        self.assertEqual(transport.value(), bytes.fromhex("0000000a010a0000000000000003"))

    def test_timedPongToClockSender(self):
        """
        Once the clock is agreed, the receiver's own PONGs carry its times.
        """
        proto, transport, registry, clock = receiver()
        proto.dataReceived(framed(CLOCK_HELLO))
        transport.clear()
        proto.dataReceived(framed(wire.Ping(9)))
        self.assertEqual(written(transport), [wire.Pong(9, 1000.0, 1000.0)])

    def test_connectionLostStopsProbe(self):
        """
        Losing the connection cancels the PINGs the burst had left.
        """
        from twisted.python.failure import Failure

        proto, transport, registry, clock = receiver()
        proto.dataReceived(framed(CLOCK_HELLO))
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(clock.getDelayedCalls(), [])


class StubSender:
    def __init__(self, hello) -> None:
        self._hello = hello

    def hello(self):
        return self._hello

    def connected(self, protocol, welcome):
        pass

    def acked(self, seq):
        pass

    def disconnected(self, protocol, reason):
        pass


def sender(capabilities: int, skew: float = -300.0):
    clock = Clock()
    clock.advance(1000)
    factory = SenderFactory(StubSender(wire.Hello("cam-1", capabilities, 1)), clock=clock)
    factory.wallClock = SkewedClock(clock, skew)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    transport.clear()
    return proto, transport, clock


class SenderClockTests(SynchronousTestCase):
    """
    The sending protocol answers PINGs with its wall clock's times once the
    clock is agreed, and byte for byte as before otherwise.
    """

    def test_timedPong(self):
        """
        After a WELCOME with SCAP_CLOCK, a PING is answered with a PONG
        stamped by the factory's C{wallClock}.
        """
        proto, transport, clock = sender(wire.CAP_CLOCK)
        proto.dataReceived(framed(wire.Welcome(wire.SCAP_CLOCK)))
        proto.dataReceived(framed(wire.Ping(4)))
        self.assertEqual(written(transport), [wire.Pong(4, 700.0, 700.0)])

    def test_plainPongBeforeWelcome(self):
        """
        Before WELCOME nothing is agreed: the PONG is the plain one.
        """
        proto, transport, clock = sender(wire.CAP_CLOCK)
        proto.dataReceived(framed(wire.Ping(4)))
        self.assertEqual(written(transport), [wire.Pong(4)])

    def test_plainPongWithoutServerClock(self):
        """
        A receiver that does not answer CAP_CLOCK with SCAP_CLOCK gets plain
        PONGs, byte-identical to those of a sender without the capability.
        """
        proto, transport, clock = sender(wire.CAP_CLOCK)
        proto.dataReceived(framed(wire.Welcome()))
        proto.dataReceived(framed(wire.Ping(4)))
        self.assertEqual(transport.value(), bytes.fromhex("0000000a010a0000000000000004"))


class StatsTests(SynchronousTestCase):
    """
    L{StreamStats} corrects latency by the estimate and reports it.
    """

    def test_correctedLatency(self):
        """
        After a sample, each frame's latency is also kept with its capture
        time moved to our clock; the snapshot reports both, the offset and
        its bound.
        """
        stats = StreamStats()
        stats.connected(1000.0, newSession=True)
        stats.frameAccepted(0, 10, 700.0, 1000.010, 0)  # before any sample
        stats.clockSampled(wire.ClockSample(-300.0, 0.002, 1000.0))
        stats.frameAccepted(1, 10, 700.0, 1000.010, 0)
        snapshot = stats.snapshot(1000.0, connected=True)
        self.assertEqual(snapshot["latency_ms"]["p50"], 300010.0)
        self.assertEqual(snapshot["latency_corrected_ms"]["p50"], 10.0)
        self.assertEqual(snapshot["clock_offset_ms"], -300000.0)
        self.assertEqual(snapshot["clock_error_ms"], 1.0)

    def test_farOffClockStillCorrected(self):
        """
        A sender whose clock is days off has no measured latency (its
        capture times are implausible) but a corrected one.
        """
        stats = StreamStats()
        stats.connected(1000.0, newSession=True)
        stats.clockSampled(wire.ClockSample(-3 * 86400.0, 0.002, 1000.0))
        stats.frameAccepted(0, 10, 1000.0 - 3 * 86400.0, 1000.005, 0)
        snapshot = stats.snapshot(1000.0, connected=True)
        self.assertEqual(snapshot["implausible_times"], 1)
        self.assertIsNone(snapshot["latency_ms"]["p50"])
        self.assertEqual(snapshot["latency_corrected_ms"]["p50"], 5.0)

    def test_newConnectionForgetsEstimate(self):
        """
        A new connection measures the clock afresh.
        """
        stats = StreamStats()
        stats.connected(1000.0, newSession=True)
        stats.clockSampled(wire.ClockSample(-300.0, 0.002, 1000.0))
        stats.connected(1001.0, newSession=False)
        self.assertIsNone(stats.snapshot(1001.0, connected=True)["clock_offset_ms"])


class BothEndsTests(SynchronousTestCase):
    """
    A real L{FrameSender} whose clock is 300 s slow, against the real
    registry and pipeline, over an in-memory connection with 1 ms each way.
    """

    def test_skewedSenderTrueLatency(self):
        """
        Within a second of WELCOME the receiver has an estimate of the
        sender's offset that holds the true one within its bound; a frame
        captured 10 ms before it is sent shows about 300 s measured and
        about 10 ms (plus the 1 ms delay) corrected.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        skew = -300.0
        registry, pipeline = receiverStack(clock)
        serverFactory = ReceiverFactory(registry, clock, pipeline=pipeline, heartbeat=2)
        wall = SkewedClock(clock, skew)
        frameSender = FrameSender("cam", True, wall)
        clientFactory = SenderFactory(frameSender, clock=clock)
        clientFactory.wallClock = wall
        client, server, pump = iosim.connectedServerAndClient(
            lambda: serverFactory.buildProtocol(None),
            lambda: clientFactory.buildProtocol(None),
            greet=False,
            clock=clock,
        )

        def run(seconds):
            for _ in range(int(seconds / 0.001)):
                clock.advance(0.001)
                pump.pump()

        run(1.0)
        stats = registry.snapshot()["streams"]["cam"]
        self.assertIsNotNone(stats["clock_offset_ms"])
        self.assertLessEqual(
            abs(stats["clock_offset_ms"] - skew * 1000), stats["clock_error_ms"] + 1e-6
        )
        self.assertLess(stats["clock_error_ms"], 2.0)

        frameSender.frameCaptured(FAKE_JPEG, wall.seconds() - 0.010)
        run(0.1)
        stats = registry.snapshot()["streams"]["cam"]
        self.assertEqual(stats["frames"], 1)
        # Sent 10 ms after capture, 1 ms on the way: 11 ms truly.
        self.assertEqual(stats["latency_ms"]["p50"], 300_011.0)
        self.assertLessEqual(
            abs(stats["latency_corrected_ms"]["p50"] - 11.0), stats["clock_error_ms"]
        )


class SkewedProcessTests(TwistdProcesses, TestCase):
    """
    Real C{twistd} processes on loopback: a sender whose clock is 300 s
    slow (C{IMAGEPROTO_CLOCK_SKEW=-300}) beside one with a true clock.
    """

    timeout = 120

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.port = freePort()
        self.statsFile = os.path.join(self.directory, "stats.json")

    def sender(self, name: str, skew: float):
        env = dict(os.environ, IMAGEPROTO_CLOCK_SKEW=str(skew))
        return self.spawn(
            name,
            ["imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port}", "--name", name,
             "--width", "160", "--height", "120", "--fps", "30", "--count", "90"],
            env=env,
        )

    @defer.inlineCallbacks
    def test_trueLatencyDespiteSkew(self):
        """
        The skewed stream's measured latency is about 300 s; its corrected
        latency is within 10 ms of the true-clock stream's measured one; and the offset estimate holds the true offset within
        its reported bound.
        """
        receiver = self.spawn(
            "receiver",
            ["imageproto", "--port", f"tcp:{self.port}:interface=127.0.0.1",
             "--stats-file", self.statsFile],
        )
        yield waitFor(
            lambda: receiver.status is not None or listening(self.port), 30, "the receiver to listen"
        )
        self.assertIsNone(receiver.status, receiver.text)
        true = self.sender("true", 0)
        skewed = self.sender("skewed", -300)
        for process in (true, skewed):
            status = yield process.ended
            self.assertEqual(status, 0, process.text)
        self.assertIn("IMAGEPROTO_CLOCK_SKEW", skewed.text)
        receiver.transport.signalProcess("TERM")
        yield receiver.ended
        with open(self.statsFile) as f:
            streams = json.load(f)["streams"]
        baseline, off = streams["true"], streams["skewed"]
        self.assertEqual(off["frames"], 90)
        self.assertLess(abs(off["latency_ms"]["p50"] - 300_000.0), 50.0)
        self.assertLessEqual(
            abs(off["clock_offset_ms"] + 300_000.0), off["clock_error_ms"], off
        )
        # Bounds loose enough for two processes on a loaded machine (each
        # p50 about 0.5 ms here, the error about 0.3 ms), and still 30,000
        # times tighter than the skew corrected.
        self.assertLess(off["clock_error_ms"], 10.0)
        self.assertLess(
            abs(off["latency_corrected_ms"]["p50"] - baseline["latency_ms"]["p50"]), 10.0,
            (off, baseline),
        )
        # The true-clock sender's own estimate is about zero.
        self.assertLessEqual(abs(baseline["clock_offset_ms"]), baseline["clock_error_ms"])


class ClockVectorTests(SynchronousTestCase):
    """
    The C{clock} blocks of PROTOCOL.md hold for L{wire.clockSample}.
    """

    def test_vectors(self):
        """
        Each block's four times give exactly its offset, round trip and
        error (the vectors use binary fractions, so equality is exact).
        """
        from tests.test_wire import protocolBlocks

        blocks = [json.loads(b) for b in protocolBlocks("clock")]
        self.assertGreaterEqual(len(blocks), 3)
        for v in blocks:
            sample = wire.clockSample(v["t1"], v["t2"], v["t3"], v["t4"])
            self.assertEqual(
                (sample.offset, sample.roundTrip, sample.error),
                (v["offset"], v["roundTrip"], v["error"]),
                v["name"],
            )


class ExportTests(SynchronousTestCase):
    """
    The estimate leaves the receiver through /metrics; the sender's tap
    reads the testing aid from its environment.
    """

    def test_metrics(self):
        """
        /metrics has the offset, its bound and the corrected quantiles, in
        seconds, for a stream with an estimate, and none for one without.
        """
        from imageproto.features.web.metrics import ReceiverMetrics

        snapshot = {"streams": {
            "cam": {"clock_offset_ms": -300000.0, "clock_error_ms": 0.25,
                    "latency_corrected_ms": {"p50": 1.5, "p95": 2.0, "p99": None}},
            "old": {"clock_offset_ms": None, "clock_error_ms": None,
                    "latency_corrected_ms": {"p50": None, "p95": None, "p99": None}},
        }}
        text = ReceiverMetrics(lambda: snapshot).render().decode()
        self.assertIn('imageproto_clock_offset_seconds{stream="cam"} -300.0', text)
        self.assertIn('imageproto_clock_error_seconds{stream="cam"} 0.00025', text)
        self.assertIn(
            'imageproto_frame_latency_corrected_seconds{quantile="0.5",stream="cam"} 0.0015', text
        )
        self.assertNotIn('stream="old"', text.split("imageproto_clock_offset_seconds")[-1].split("#")[0])

    def test_clockSkewVariable(self):
        """
        IMAGEPROTO_CLOCK_SKEW is read as seconds; unset or empty is 0, and
        anything but a finite number is a usage error.
        """
        from twisted.python.usage import UsageError

        from imageproto.tap.checks import clockSkew

        self.assertEqual(clockSkew({}), 0.0)
        self.assertEqual(clockSkew({"IMAGEPROTO_CLOCK_SKEW": " "}), 0.0)
        self.assertEqual(clockSkew({"IMAGEPROTO_CLOCK_SKEW": "-300"}), -300.0)
        for bad in ("soon", "nan", "inf"):
            self.assertRaises(UsageError, clockSkew, {"IMAGEPROTO_CLOCK_SKEW": bad})

    def test_tapSkewsTheSender(self):
        """
        With the variable set, the sender's tap stamps frames and PONGs with
        a skewed clock, and leaves the factory's timers on the reactor.
        """
        from twisted.internet.testing import MemoryReactorClock

        from imageproto.tap import sender as tap

        reactor = MemoryReactorClock()
        reactor.advance(1000)
        options = tap.Options()
        self.patch(os, "environ", dict(os.environ, IMAGEPROTO_CLOCK_SKEW="-300"))
        options.parseOptions(["--connect", "tcp:127.0.0.1:9"])
        service = tap.makeService(options, reactor=reactor)
        [factory] = [c.factory for c in service if hasattr(c, "factory")]
        [capture] = [c for c in service if hasattr(c, "now")]
        self.assertIs(factory.clock, reactor)
        self.assertEqual(factory.wallClock.seconds(), 700.0)
        self.assertIs(service.sender.clock, factory.wallClock)
        self.assertEqual(capture.now(), 700.0)
