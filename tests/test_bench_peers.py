# -*- test-case-name: tests.test_bench_peers -*-
"""
Tests for L{bench.peers}: its figures and table as pure functions, and
short real runs of the plain socket and imageproto (and, when installed,
imagezmq) as child processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from bench.peers import common, run

try:
    import cv2  # noqa: F401
except ImportError:  # pragma: no cover
    cv2 = None


class PercentileTests(SynchronousTestCase):
    """
    L{common.percentile} is the nearest-rank percentile.
    """

    def test_nearestRank(self):
        """
        Of 1..100 the median is 50, p99 is 99 and p100 is 100, whatever the
        order; of 1..10 p99 is 10; no values give NaN.
        """
        values = list(range(100, 0, -1))
        self.assertEqual(common.percentile(values, 0.5), 50)
        self.assertEqual(common.percentile(values, 0.99), 99)
        self.assertEqual(common.percentile(values, 1.0), 100)
        self.assertEqual(common.percentile(list(range(1, 11)), 0.99), 10)
        nan = common.percentile([], 0.5)
        self.assertNotEqual(nan, nan)


def _sender(**kw):
    base = {"sent": 1000, "start": 100.0, "end": 101.0, "cpu": 0.5, "hwm": 2048}
    base.update(kw)
    return base


def _receiver(**kw):
    base = {"received": 1000, "bytes": 60_000_000, "cpu": 0.25, "hwm": 4096}
    base.update(kw)
    return base


class MeasureTests(SynchronousTestCase):
    """
    L{common.measure} turns what the processes reported into figures.
    """

    def test_throughput(self):
        """
        Frames/s and MB/s run from the first send to the later of the last
        delivery and the last arrival; CPU is per 1000 frames per side;
        lost is sent minus received.
        """
        r = common.measure([_sender()], _receiver(received=990, last=102.0))
        self.assertAlmostEqual(r["fps"], 495.0)
        self.assertAlmostEqual(r["mbps"], 30.0)
        self.assertAlmostEqual(r["senderCpu"], 0.5)
        self.assertAlmostEqual(r["receiverCpu"], 0.25 * 1000 / 990)
        self.assertEqual((r["senderKiB"], r["receiverKiB"], r["lost"]), (2048, 4096, 10))
        self.assertNotIn("p50", r)

    def test_severalSenders(self):
        """
        With several senders the span runs from the earliest start to the
        latest end, CPU adds up, and peak memory is the largest sender's.
        """
        senders = [_sender(), _sender(start=100.5, end=102.0, hwm=3000)]
        r = common.measure(senders, _receiver(received=2000))
        self.assertAlmostEqual(r["fps"], 1000.0)
        self.assertAlmostEqual(r["senderCpu"], 0.5)
        self.assertEqual(r["senderKiB"], 3000)

    def test_latencyJoinsBySeq(self):
        """
        Latency is each frame's arrival minus its own capture time, joined
        by seq, leaving out the warm-up frames.
        """
        n = common.LATENCY_WARMUP + 100
        captures = [float(i) for i in range(n)]
        # Frame seq arrives seq/1000 s after its capture, in reverse order.
        arrivals = [(seq, seq + seq / 1000) for seq in reversed(range(n))]
        r = common.measure(
            [_sender(sent=n, captures=captures)], _receiver(received=n, arrivals=arrivals)
        )
        expected = sorted(seq / 1000 for seq in range(common.LATENCY_WARMUP, n))
        self.assertAlmostEqual(r["p50"], expected[49] * 1000)
        self.assertAlmostEqual(r["p99"], expected[98] * 1000)


class SummaryTests(SynchronousTestCase):
    """
    L{common.summarise} takes medians and ratios; L{common.formatTable}
    lays them out.
    """

    runs = {
        "S1": {
            "plain": [{"fps": 100.0, "lost": 0}, {"fps": 200.0, "lost": 0}, {"fps": 300.0, "lost": 0}],
            "imageproto": [{"fps": 60.0, "lost": 0}, {"fps": 100.0, "lost": 2}, {"fps": 240.0, "lost": 0}],
            "NetGear": [{"error": "unavailable: vidgear.gears: no module"}],
        },
        "S3": {
            "plain": [{"fps": 30.0, "p50": 1.0, "lost": 0}],
            "imageproto": [{"fps": 30.0, "p50": 1.25, "lost": 0}],
        },
    }

    def test_medianAndRatio(self):
        """
        The figure is the median over repetitions, the ratio the median of
        the ratios to the baseline's same repetition (0.6, 0.5, 0.8 -> 0.6),
        lost the largest, and a latency's difference is kept.
        """
        summary = common.summarise(self.runs)
        self.assertEqual(summary["S1"]["plain"]["fps"], (200.0, 1.0, 0.0))
        value, ratio, _ = summary["S1"]["imageproto"]["fps"]
        self.assertEqual(value, 100.0)
        self.assertAlmostEqual(ratio, 0.6)
        self.assertEqual(summary["S1"]["imageproto"]["lost"], (2, None, None))
        self.assertEqual(summary["S1"]["NetGear"], {"error": "unavailable: vidgear.gears: no module"})
        self.assertAlmostEqual(summary["S3"]["imageproto"]["p50"][2], 0.25)

    def test_table(self):
        """
        One column per peer; ratios in brackets except for the baseline;
        latencies as differences in ms; an unavailable peer shows why.
        """
        table = common.formatTable(
            common.summarise(self.runs), ["plain", "imageproto", "NetGear"], ["S1", "S3"]
        )
        lines = table.splitlines()
        self.assertEqual(lines[0].split(), ["scenario", "figure", "plain", "imageproto", "NetGear"])
        fps = next(l for l in lines if l.startswith("S1 "))
        self.assertIn("200", fps)
        self.assertIn("100 (0.60x)", fps)
        self.assertIn("unavailable: vidgear.gears: no module", fps)
        self.assertTrue(any("1.25 (+0.25)" in l for l in lines))
        self.assertFalse(any("p99" in l for l in lines))


class RunTests(SynchronousTestCase):
    """
    L{run.runPair} runs real processes on 127.0.0.1 and measures them.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("OpenCV is not installed")
        self.workDir = tempfile.mkdtemp(prefix="bench-peers-test-")
        self.addCleanup(shutil.rmtree, self.workDir, True)
        self.means = common.writeFrames(os.path.join(self.workDir, "frames"), count=2)

    def _runPeer(self, peer, frames=300):
        r = run.runPair(peer, common.SCENARIOS["S1"], frames, self.workDir, deadline=60)
        self.assertEqual(r["lost"], 0)
        self.assertGreater(r["fps"], 0)
        self.assertGreater(r["receiverKiB"], 0)
        self.assertLess(abs(r["mbps"] * 1e6 / r["fps"] - self.means["640"]), 2000)
        return r

    def test_frameSize(self):
        """
        The 640x480 test JPEGs are about 63 KB, as the issue's S1 says.
        """
        self.assertLess(abs(self.means["640"] - 63_000), 3_000)

    def test_plain(self):
        """
        The plain socket pair delivers every frame.
        """
        self._runPeer("plain")

    def test_imageproto(self):
        """
        A real imageproto sender into the real twistd receiver delivers
        every frame (counted from the receiver's stats file).
        """
        self._runPeer("imageproto")

    def test_imagezmq(self):
        """
        imagezmq's REQ/REP pair delivers every frame.
        """
        reason = run.availability(["imagezmq REQ/REP"])["imagezmq REQ/REP"]
        if reason:
            raise self.skipTest(reason)
        self._runPeer("imagezmq REQ/REP")
