"""
Tests for L{imageproto.demo}, the program behind C{scripts/demo}.
"""

import os

from imageproto.receiver.savedir import savedFrames
import sys

from twisted.internet import utils
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto.demo import formatStats, freePort
from imageproto.tap import twistdCommand


class FormatStatsTests(SynchronousTestCase):
    def test_tableHasOneRowPerStream(self):
        """
        Each stream in a stats snapshot becomes one row with its frame count,
        fps and latency percentiles; a missing percentile shows as '-'.
        """
        snapshot = {
            "streams": {
                "cam2": {
                    "frames": 7, "bytes": 2_000_000, "fps": 3.5,
                    "latency_ms": {"p50": 1.25, "p95": None, "p99": 9.0},
                    "gaps": 1, "dropped": 2, "connections": 3,
                },
                "cam1": {
                    "frames": 150, "bytes": 10_000_000, "fps": 30.0,
                    "latency_ms": {"p50": 0.5, "p95": 0.75, "p99": 1.0},
                    "gaps": 0, "dropped": 0, "connections": 1,
                },
            }
        }
        lines = formatStats(snapshot).splitlines()
        self.assertEqual(len(lines), 4)
        self.assertTrue(lines[2].startswith("cam1"))
        self.assertEqual(
            lines[3].split(), ["cam2", "7", "2.00", "3.5", "1.25", "-", "9.00", "1", "2", "3"]
        )

    def test_freePortIsBindable(self):
        """
        L{freePort} names a port number that can be bound on loopback.
        """
        import socket

        port = freePort()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    def test_twistdCommandRunsThisInterpreter(self):
        """
        L{twistdCommand} runs C{twistd -n} through the current interpreter,
        so the plugins of this environment are the ones found, with no pid
        file so that several may share a directory.
        """
        argv = twistdCommand("imageproto", "--port", "1")
        self.assertEqual(argv[0], sys.executable)
        self.assertEqual(argv[-5:], ["-n", "--pidfile=", "imageproto", "--port", "1"])


class DemoTests(TestCase):
    timeout = 120

    def test_demoStreamsEveryFrameAndPrintsStatistics(self):
        """
        The demo starts a real receiver and sender, every frame of the test
        pattern arrives and is saved, and the statistics table lists the
        stream with that frame count.
        """
        keep = os.path.abspath(self.mktemp())
        d = utils.getProcessOutputAndValue(
            sys.executable,
            ["-m", "imageproto.demo", "--seconds", "1", "--fps", "20", "--keep", keep],
            env=os.environ,
        )

        def check(result):
            out, err, code = result
            out = out.decode()
            self.assertEqual(code, 0, out + err.decode())
            row = [line for line in out.splitlines() if line.startswith("demo ")]
            self.assertEqual(len(row), 1, out)
            self.assertEqual(row[0].split()[1], "20")
            saved = savedFrames(os.path.join(keep, "frames"), "demo")
            self.assertEqual(
                [os.path.basename(p) for p in saved], [f"{seq:08d}.jpg" for seq in range(20)]
            )

        return d.addCallback(check)
