# -*- test-case-name: tests.test_load -*-
"""
Load: 100 senders at 10 fps each into one real receiver process on
loopback, for a bounded five seconds; every frame accounted for.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

try:
    import cv2  # noqa: F401
except ImportError:  # pragma: no cover
    cv2 = None

from bench import faults


class LoadTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_hundredSenders(self) -> None:
        """
        100 connections, each offering 10 frames a second for 5 s: the
        receiver counts every frame each sender had acknowledged, across
        100 streams, and no live frame is dropped or lost.
        """
        if cv2 is None:
            raise self.skipTest("OpenCV is needed to encode the frame")
        figures = yield faults.load(self.mktemp(), senders=100, fps=10, seconds=5)
        self.assertEqual(figures.notes["streams seen"], 100)
        self.assertEqual(figures.notes["offered"], 5000)
        self.assertEqual(figures.sent + figures.dropped, 5000)
        self.assertEqual(figures.notes["acknowledged"], figures.sent)
        self.assertEqual(figures.arrived, figures.sent)
        self.assertEqual((figures.dropped, figures.lost), (0, 0))
