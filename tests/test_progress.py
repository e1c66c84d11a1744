"""
Tests for L{imageproto.sender.progress}.
"""

from __future__ import annotations

import io
import os

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from imageproto.tap.config import ImagesSpec, PatternSpec, VideoSpec
from imageproto.sender.progress import (
    LogDisplay,
    Progress,
    ProgressReporter,
    RateMeter,
    TerminalDisplay,
    chooseDisplay,
    expectedFrames,
)

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None


class FakeSender:
    """
    The part of L{imageproto.sender.flow.FrameSender} the reporter reads.
    """

    def __init__(self) -> None:
        self.name = "clip"
        self.sent = 0
        self.acknowledged = 0

    def summary(self):
        return Progress(self.sent, self.acknowledged, None, 0.0, None)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class RecordingDisplay:
    def __init__(self) -> None:
        self.shown: list[Progress] = []
        self.closed = False

    def show(self, progress: Progress) -> None:
        self.shown.append(progress)

    def close(self) -> None:
        self.closed = True


class ProgressTests(SynchronousTestCase):
    def test_remaining(self) -> None:
        """
        Time left is the unacknowledged frames over the rate; unknown
        without a total or a rate.
        """
        self.assertEqual(Progress(50, 40, 100, 4.0, 10.0).remaining, 6.0)
        self.assertIsNone(Progress(50, 40, None, 4.0, 10.0).remaining)
        self.assertIsNone(Progress(50, 40, 100, 4.0, None).remaining)
        self.assertEqual(Progress(50, 40, 100, 4.0, 10.0).fraction, 0.4)

    def test_rateMeterWindow(self) -> None:
        """
        The rate covers roughly the last C{window} seconds, so it follows a
        change of pace.
        """
        meter = RateMeter(window=2.0)
        self.assertIsNone(meter.sample(0.0, 0))
        self.assertEqual(meter.sample(1.0, 10), 10.0)
        meter.sample(2.0, 20)
        meter.sample(3.0, 50)
        self.assertEqual(meter.sample(4.0, 80), 30.0)


class DisplayTests(SynchronousTestCase):
    def test_logDisplay(self) -> None:
        """
        Without a terminal, progress is a structured log event with the
        counts, the percentage, the rate and the time left.
        """
        with capturedLogs() as events:
            LogDisplay("clip").show(Progress(50, 40, 100, 4.0, 10.0))
        [event] = events
        self.assertEqual((event["acknowledged"], event["total"], event["sent"]), (40, 100, 50))
        self.assertEqual(
            formatEvent(event),
            "clip: 40 of 100 frames acknowledged (40%), 50 sent, 10.0 fps, 0:06 left",
        )

    def test_logDisplayUnknownTotal(self) -> None:
        """
        An unknown total and rate read as such.
        """
        with capturedLogs() as events:
            LogDisplay("cam").show(Progress(5, 4, None, 1.0, None))
        self.assertEqual(
            formatEvent(events[0]),
            "cam: 4 of ? frames acknowledged (?%), 5 sent, ? fps, unknown left",
        )

    def test_terminalDisplay(self) -> None:
        """
        On a terminal a tqdm bar shows acknowledged of total frames and the
        sent count.
        """
        terminal = Terminal()
        display = TerminalDisplay("clip", 10, terminal)
        display.show(Progress(5, 3, 10, 1.0, 3.0))
        display.show(Progress(8, 7, 10, 2.0, 3.5))
        display.close()
        output = terminal.getvalue()
        self.assertIn("clip", output)
        self.assertIn("7/10", output)
        self.assertIn("sent 8", output)

    def test_chooseDisplay(self) -> None:
        """
        A terminal gets a bar updated four times a second; anything else
        (a file, a pipe, twistd's /dev/null) gets log lines every 10 s.
        """
        display, interval = chooseDisplay("clip", 10, Terminal())
        self.assertIsInstance(display, TerminalDisplay)
        self.assertEqual(interval, 0.25)
        display.close()
        display, interval = chooseDisplay("clip", 10, io.StringIO())
        self.assertIsInstance(display, LogDisplay)
        self.assertEqual(interval, 10.0)
        display, interval = chooseDisplay("clip", 10, None)
        self.assertIsInstance(display, (LogDisplay, TerminalDisplay))


class ProgressReporterTests(SynchronousTestCase):
    def test_reportsWhileRunningAndOnStop(self) -> None:
        """
        The reporter samples the sender's counters at once, every interval
        while running, and once more when stopped, then closes its display.
        """
        sender, clock, display = FakeSender(), Clock(), RecordingDisplay()
        reporter = ProgressReporter(sender, 100, clock, display, interval=1.0)
        reporter.startService()
        sender.sent, sender.acknowledged = 12, 10
        clock.advance(1.0)
        sender.sent, sender.acknowledged = 24, 20
        clock.advance(1.0)
        reporter.stopService()
        self.assertEqual(
            [(p.sent, p.acknowledged, p.total, p.elapsed) for p in display.shown],
            [(0, 0, 100, 0.0), (12, 10, 100, 1.0), (24, 20, 100, 2.0), (24, 20, 100, 2.0)],
        )
        self.assertEqual(display.shown[2].fps, 10.0)
        self.assertEqual(display.shown[2].remaining, 8.0)
        self.assertTrue(display.closed)
        clock.advance(5.0)
        self.assertEqual(len(display.shown), 4)


class ExpectedFramesTests(SynchronousTestCase):
    def setUp(self) -> None:
        if cv2 is None:
            raise self.skipTest("cv2 is needed to write test media")

    def test_imageFolder(self) -> None:
        """
        An image folder's total is its number of images, capped by --count.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        for i in range(4):
            cv2.imwrite(os.path.join(directory, f"{i}.jpg"), numpy.zeros((8, 8, 3), numpy.uint8))
        with open(os.path.join(directory, "notes.txt"), "w") as f:
            f.write("not an image")
        self.assertEqual(expectedFrames(ImagesSpec(directory)), 4)
        self.assertEqual(expectedFrames(ImagesSpec(directory), count=3), 3)

    def test_video(self) -> None:
        """
        A video file's total is its frame count; a looping video has none.
        """
        path = self.mktemp() + ".avi"
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
        for i in range(6):
            writer.write(numpy.full((24, 32, 3), i * 40, numpy.uint8))
        writer.release()
        self.assertEqual(expectedFrames(VideoSpec(path)), 6)
        self.assertIsNone(expectedFrames(VideoSpec(path, loop=True)))
        self.assertEqual(expectedFrames(VideoSpec(path, loop=True), count=50), 50)

    def test_liveSource(self) -> None:
        """
        A live source has no total.
        """
        self.assertIsNone(expectedFrames(PatternSpec()))
