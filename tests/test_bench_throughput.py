# -*- test-case-name: tests.test_bench_throughput -*-
"""
Tests for L{bench.throughput}: its helpers, and short real runs of the
plain-socket pair and the imageproto protocol pair as child processes.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from bench import throughput

try:
    import cv2  # noqa: F401
except ImportError:  # pragma: no cover
    cv2 = None


class PercentileTests(SynchronousTestCase):
    """
    L{throughput.percentile} is the nearest-rank percentile.
    """

    def test_nearestRank(self):
        """
        The median of 1..100 is 50, p99 is 99, p100 is 100; an empty list
        gives NaN.
        """
        values = list(range(100, 0, -1))
        self.assertEqual(throughput.percentile(values, 0.5), 50)
        self.assertEqual(throughput.percentile(values, 0.99), 99)
        self.assertEqual(throughput.percentile(values, 1.0), 100)
        nan = throughput.percentile([], 0.5)
        self.assertNotEqual(nan, nan)


class RunTests(SynchronousTestCase):
    """
    L{throughput._run} streams real JPEGs between two real processes and
    reports figures computed from what they measured.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("OpenCV is not installed")
        self.jpegs = throughput.makeJpegs(count=2)
        self.workDir = tempfile.mkdtemp(prefix="bench-test-")
        self.addCleanup(shutil.rmtree, self.workDir, True)
        self.jpegDir = os.path.join(self.workDir, "jpegs")
        os.mkdir(self.jpegDir)
        for i, jpeg in enumerate(self.jpegs):
            with open(os.path.join(self.jpegDir, f"{i}.jpg"), "wb") as f:
                f.write(jpeg)

    def test_jpegSize(self):
        """
        The generated frames are 640x480 JPEGs within 5% of 60 KB.
        """
        for jpeg in self.jpegs:
            self.assertTrue(jpeg.startswith(b"\xff\xd8\xff"))
            self.assertLess(abs(len(jpeg) - 60_000), 3_000)
            image = cv2.imdecode(
                __import__("numpy").frombuffer(jpeg, "uint8"), cv2.IMREAD_COLOR
            )
            self.assertEqual(image.shape, (480, 640, 3))

    def check(self, kind, mode, rate):
        result = throughput._run(
            kind, mode, self.workDir, self.jpegDir, frames=40, window=4, rate=rate
        )
        self.assertTrue(result["lossless"], result)
        self.assertGreater(result["fps"], 0)
        self.assertGreaterEqual(result["p99"], result["p50"])
        self.assertGreater(result["p50"], 0)
        return result

    def test_plain(self):
        """
        The plain-socket pair delivers every frame, in order, back to back
        and at a fixed rate.
        """
        self.check("plain", None, 0.0)
        self.check("plain", None, 200.0)

    def test_minimal(self):
        """
        The imageproto protocols with stand-in collaborators deliver every
        frame exactly once, back to back and at a fixed rate.
        """
        self.check("imageproto", "minimal", 0.0)
        self.check("imageproto", "minimal", 200.0)
