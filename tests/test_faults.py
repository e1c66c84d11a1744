# -*- test-case-name: tests.test_faults -*-
"""
Faults survived, with real C{twistd} processes on loopback: the scenarios of
L{bench.faults}, at smaller sizes, with their figures asserted.

Each test takes a few seconds to half a minute; they wait by polling on the
real reactor, never by sleeping.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

try:
    import cv2  # noqa: F401
except ImportError:  # pragma: no cover
    cv2 = None

from bench import faults


class FaultTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        if cv2 is None:
            raise self.skipTest("OpenCV is needed to write the test images")
        self.workdir = self.mktemp()

    @defer.inlineCallbacks
    def test_receiverRestart(self) -> None:
        """
        The receiver killed (SIGKILL) mid-stream and started again: the
        sender reconnects within its backoff (--max-delay 1 s), and every
        frame of the finite source is stored exactly once.
        """
        figures = yield faults.restart(self.workdir, frames=60)
        self.assertEqual(figures.notes["sender exit"], 0)
        self.assertEqual(figures.sent, 60)
        self.assertEqual(figures.notes["acknowledged"], 60)
        self.assertEqual(figures.arrived, 60)
        self.assertEqual(figures.reconnects, 1)
        self.assertLess(figures.reconnectSeconds, 3.0)

    @defer.inlineCallbacks
    def test_stalledNetwork(self) -> None:
        """
        A network that stops carrying traffic: the receiver and the sender
        each notice within the idle timeout (plus a heartbeat of slack);
        the sender's memory stays flat; its live frames are dropped and
        counted; every frame it sent is acknowledged, counted lost, or still in flight
        (unacknowledged) when it stops; the
        stream resumes when traffic flows again.
        """
        figures = yield faults.stall(self.workdir, stallSeconds=6)
        self.assertLessEqual(figures.noticeSeconds, faults.IDLE + faults.HEARTBEAT + 1)
        self.assertLessEqual(
            figures.senderNoticeSeconds, faults.IDLE + faults.HEARTBEAT + 1
        )
        self.assertGreater(figures.dropped, 0)
        # Frames still in flight when the sender was stopped are counted as
        # unacknowledged, so every frame sent is accounted for.
        self.assertEqual(
            figures.notes["acknowledged"] + figures.lost + figures.notes["unacknowledged"],
            figures.sent,
        )
        self.assertEqual(figures.arrived, figures.notes["acknowledged"])
        before = figures.notes["sender peak before stall KiB"]
        during = figures.notes["sender peak at end of stall KiB"]
        # A stalled live sender holds at most its window of frames: its peak
        # grows by less than 8 MiB over six seconds of a 30 fps source.
        self.assertLess(during - before, 8 * 1024)
        self.assertGreaterEqual(figures.reconnects, 1)

    @defer.inlineCallbacks
    def test_slowConsumerIsolated(self) -> None:
        """
        A detector slow on one stream does not slow another: the fast
        stream finishes at its own pace while the slow one is held back.
        """
        figures = yield faults.slow(self.workdir, frames=60)
        self.assertEqual(figures.notes["exit"], (0, 0))
        self.assertEqual(figures.arrived, 120)
        fast, slow = figures.notes["fast s"], figures.notes["slow s"]
        # 60 frames at 30 fps is 2 s of capture, plus process start-up.
        self.assertLess(fast, 2.0 + 3.0)
        self.assertLess(float(figures.notes["fast rtt p95 s"]), 0.1)
        # The slow stream's 6 s of detection hold it back (the detector
        # queue pauses reading from it past 32 waiting frames).
        self.assertGreater(slow, fast + 0.5)
        self.assertGreater(float(figures.notes["slow rtt p95 s"]), 0.5)

    @defer.inlineCallbacks
    def test_garbageWhileServing(self) -> None:
        """
        While a good sender streams, 100 connections send mutated messages:
        the server closes every one of them and stores every good frame.
        """
        figures = yield faults.fuzz(self.workdir, frames=90, connections=100)
        self.assertEqual(figures.notes["closed by server"], 100)
        self.assertGreater(figures.notes["good frames stored during the garbage"], 0)
        self.assertEqual(figures.notes["sender exit"], 0)
        self.assertEqual(figures.arrived, 90)
