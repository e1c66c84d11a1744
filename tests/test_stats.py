"""
Tests for L{imageproto.receiver.stats}.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from imageproto.receiver.stats import (
    PLAUSIBLE_SKEW,
    StreamStats,
    percentile,
    plausibleTime,
    strictJSON,
)


class PercentileTests(SynchronousTestCase):
    def test_nearestRank(self):
        """
        L{percentile} returns the nearest-rank value of an ascending list.
        """
        values = list(range(1, 101))
        self.assertEqual(percentile(values, 0.50), 50)
        self.assertEqual(percentile(values, 0.95), 95)
        self.assertEqual(percentile(values, 0.99), 99)
        self.assertEqual(percentile([7], 0.99), 7)

    def test_empty(self):
        """
        The percentile of no values is C{None}.
        """
        self.assertIsNone(percentile([], 0.5))


def _accept(stats, seq, at, captured=None, size=100, dropped=0):
    stats.frameAccepted(seq, size, at if captured is None else captured, at, dropped)


class StreamStatsTests(SynchronousTestCase):
    def test_framesAndBytes(self):
        """
        Accepted frames add to the frame and byte counts and set last_seen.
        """
        stats = StreamStats()
        stats.connected(10.0, newSession=True)
        _accept(stats, 0, 10.5, size=300)
        _accept(stats, 1, 11.0, size=200)
        self.assertEqual((stats.frames, stats.bytes, stats.lastSeen), (2, 500, 11.0))

    def test_fpsOverWindow(self):
        """
        The frame rate counts receive times within the last C{window}
        seconds; older frames stop counting and an idle stream falls to 0.
        """
        stats = StreamStats(window=2.0)
        stats.connected(0.0, newSession=True)
        for i in range(40):  # 10 fps for 4 seconds
            _accept(stats, i, 0.1 * (i + 1))
        self.assertAlmostEqual(stats.fps(4.0), 10.0, delta=0.51)
        self.assertAlmostEqual(stats.fps(5.0), 5.0, delta=0.51)
        self.assertEqual(stats.fps(6.5), 0.0)

    def test_fpsEarly(self):
        """
        Before a whole window has passed, the rate is over the time since
        the stream appeared, not diluted by the window's length.
        """
        stats = StreamStats(window=5.0)
        stats.connected(0.0, newSession=True)
        for i in range(10):
            _accept(stats, i, 0.05 * (i + 1))
        self.assertAlmostEqual(stats.fps(0.5), 20.0)

    def test_fpsNeverConnected(self):
        """
        A stream that saw nothing has a rate of 0.
        """
        self.assertEqual(StreamStats().fps(100.0), 0.0)

    def test_latencyPercentiles(self):
        """
        Latency percentiles are capture-to-receive times in milliseconds.
        """
        stats = StreamStats()
        stats.connected(0.0, newSession=True)
        for i in range(100):
            stats.frameAccepted(i, 1, 100.0, 100.0 + (i + 1) / 1000.0, 0)
        self.assertEqual(
            stats.latencyPercentiles(), {"p50": 50.0, "p95": 95.0, "p99": 99.0}
        )

    def test_latencyWindowBounded(self):
        """
        Only the latest C{latencySamples} latencies count.
        """
        stats = StreamStats(latencySamples=10)
        stats.connected(0.0, newSession=True)
        for i in range(100):
            stats.frameAccepted(i, 1, 0.0, 1.0, 0)
        for i in range(100, 110):
            stats.frameAccepted(i, 1, 0.0, 0.002, 0)
        self.assertEqual(stats.latencyPercentiles()["p99"], 2.0)

    def test_latencyEmpty(self):
        """
        Before any frame the percentiles are C{None}.
        """
        self.assertEqual(
            StreamStats().latencyPercentiles(), {"p50": None, "p95": None, "p99": None}
        )

    def test_gaps(self):
        """
        A jump in sequence numbers counts the skipped numbers as gaps.
        """
        stats = StreamStats()
        stats.connected(0.0, newSession=True)
        for seq in (0, 1, 4, 5, 9):
            _accept(stats, seq, 1.0)
        self.assertEqual(stats.gaps, 5)

    def test_lateFrameFillsGap(self):
        """
        A frame arriving after a higher one fills a gap counted earlier.
        """
        stats = StreamStats()
        stats.connected(0.0, newSession=True)
        for seq in (0, 3, 1):
            _accept(stats, seq, 1.0)
        self.assertEqual(stats.gaps, 1)

    def test_newSessionNoGap(self):
        """
        A new session starts numbering again without counting a gap; the
        same session continuing after a reconnect does count one.
        """
        stats = StreamStats()
        stats.connected(0.0, newSession=True)
        _accept(stats, 0, 1.0)
        _accept(stats, 50, 1.0)
        stats.connected(2.0, newSession=True)
        _accept(stats, 0, 3.0)
        _accept(stats, 1, 3.1)
        self.assertEqual(stats.gaps, 49)
        stats.connected(4.0, newSession=False)
        _accept(stats, 3, 4.1)
        self.assertEqual(stats.gaps, 50)

    def test_droppedAcrossSessions(self):
        """
        The sender's cumulative dropped count is tracked per session and
        summed across sessions.
        """
        stats = StreamStats()
        stats.connected(0.0, newSession=True)
        _accept(stats, 0, 1.0, dropped=2)
        _accept(stats, 1, 1.1, dropped=5)
        stats.connected(2.0, newSession=False)
        _accept(stats, 2, 2.1, dropped=5)
        self.assertEqual(stats.dropped, 5)
        stats.connected(3.0, newSession=True)
        _accept(stats, 0, 3.1, dropped=3)
        self.assertEqual(stats.dropped, 8)

    def test_connectionsAndReconnects(self):
        """
        Every HELLO is a connection; every one after the first is a
        reconnect.
        """
        stats = StreamStats()
        for i in range(3):
            stats.connected(float(i), newSession=i == 0)
        self.assertEqual((stats.connections, stats.reconnects), (3, 2))

    def test_rejectedAndDuplicates(self):
        """
        Rejected and duplicate frames have their own counts and are not
        frames.
        """
        stats = StreamStats()
        stats.frameRejected(1.0)
        stats.duplicateReceived(2.0)
        stats.duplicateReceived(3.0)
        self.assertEqual(
            (stats.rejected, stats.duplicates, stats.frames, stats.lastSeen),
            (1, 2, 0, 3.0),
        )

    def test_snapshotShape(self):
        """
        L{StreamStats.snapshot} has exactly the documented keys.
        """
        stats = StreamStats()
        stats.connected(0.0, newSession=True)
        stats.frameAccepted(0, 10, 0.0, 0.25, 1)
        snapshot = stats.snapshot(1.0, connected=True)
        self.assertEqual(
            snapshot,
            {
                "frames": 1,
                "bytes": 10,
                "fps": 1.0,
                "latency_ms": {"p50": 250.0, "p95": 250.0, "p99": 250.0},
                "latency_corrected_ms": {"p50": None, "p95": None, "p99": None},
                "clock_offset_ms": None,
                "clock_error_ms": None,
                "gaps": 0,
                "dropped": 1,
                "connections": 1,
                "reconnects": 0,
                "rejected": 0,
                "storage_errors": 0,
                "duplicates": 0,
                "implausible_times": 0,
                "connected": True,
                "last_seen": 0.25,
            },
        )


class ImplausibleTimeTests(SynchronousTestCase):
    def test_absurdCaptureTimesCountedNotMeasured(self):
        """
        A capture time that is finite but absurd (-1e308, 1e308), or more
        than a day from the receiver's clock, is counted in
        C{implausible_times} and kept out of the latency percentiles, so the
        snapshot stays strict JSON.
        """
        stats = StreamStats()
        stats.connected(1000.0, newSession=True)
        _accept(stats, 0, 1000.0, captured=999.99)
        _accept(stats, 1, 1000.1, captured=-1e308)
        _accept(stats, 2, 1000.2, captured=1e308)
        _accept(stats, 3, 1000.3, captured=1000.3 - 86401)
        snapshot = stats.snapshot(1000.3, True)
        self.assertEqual(snapshot["implausible_times"], 3)
        self.assertEqual(snapshot["frames"], 4)
        self.assertEqual(snapshot["latency_ms"]["p99"], 10.0)
        json.dumps(snapshot, allow_nan=False)

    def test_absurdSendTime(self):
        """
        An implausible send time counts the same way.
        """
        stats = StreamStats()
        stats.frameAccepted(0, 10, 5.0, 5.0, 0, sendTime=1e308)
        self.assertEqual(stats.implausibleTimes, 1)
        self.assertEqual(stats.latencyPercentiles()["p50"], None)

    def test_plausibleTime(self):
        """
        L{plausibleTime} accepts finite times within a day of now.
        """
        self.assertTrue(plausibleTime(100.0, 100.0 + PLAUSIBLE_SKEW))
        self.assertFalse(plausibleTime(100.0, 100.0 + PLAUSIBLE_SKEW + 1))
        self.assertFalse(plausibleTime(float("nan"), 0.0))
        self.assertFalse(plausibleTime(float("-inf"), 0.0))

    def test_strictJSON(self):
        """
        L{strictJSON} writes non-finite floats as null, nested anywhere.
        """
        self.assertEqual(
            json.loads(strictJSON({"a": [float("inf"), 1.5], "b": {"c": float("nan")}})),
            {"a": [None, 1.5], "b": {"c": None}},
        )
