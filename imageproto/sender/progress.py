# -*- test-case-name: tests.test_progress -*-
"""
Sender progress: frames sent and acknowledged of the total, frame rate and
time left.

On a terminal, L{TerminalDisplay} draws a C{tqdm} bar; with no terminal (the
output is a file or a pipe, or twistd daemonised and pointed the standard
streams at C{/dev/null}), L{LogDisplay} emits a structured log line every
few seconds instead.  L{ProgressReporter} reads the sender's public counters
(C{summary().sent}, C{.acknowledged}) on a L{LoopingCall}, so the sender needs no
per-frame hook and stays unaware of how progress is shown.
"""

from __future__ import annotations

import sys
from collections import deque

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = [
    "Progress",
    "RateMeter",
    "TerminalDisplay",
    "LogDisplay",
    "ProgressReporter",
    "chooseDisplay",
    "expectedFrames",
]


@frozen
class Progress:
    """
    Where a sender stands.

    @ivar sent: distinct frames sent.
    @ivar acknowledged: frames the receiver acknowledged.
    @ivar total: frames the source holds, or C{None} when unknown (a live
        source, or a video whose length OpenCV cannot tell).
    @ivar elapsed: seconds since the reporter started.
    @ivar fps: acknowledged frames per second lately, or C{None}.
    """

    sent: int
    acknowledged: int
    total: int | None
    elapsed: float
    fps: float | None

    @property
    def remaining(self) -> float | None:
        """
        Seconds until every frame is acknowledged at the current rate, or
        C{None} when the total or the rate is unknown.
        """
        if self.total is None or not self.fps:
            return None
        return max(0, self.total - self.acknowledged) / self.fps

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.acknowledged / self.total)


class RateMeter:
    """
    A count's rate over the last C{window} seconds of samples.
    """

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, count: int) -> float | None:
        """
        Record C{count} at time C{now}.

        @return: the rate per second over the window, or C{None} until two
            samples span some time.
        """
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        then, before = samples[0]
        if now <= then:
            return None
        return (count - before) / (now - then)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


class TerminalDisplay:
    """
    A C{tqdm} progress bar of acknowledged frames, with the sent count.

    @param name: the stream name, the bar's label.
    @param total: the bar's length, or C{None} for a plain counter.
    @param stream: the terminal to draw on.
    """

    def __init__(self, name: str, total: int | None, stream) -> None:
        from tqdm import tqdm

        class _Bar(tqdm):
            # No monitor thread: the reactor drives every refresh.
            monitor_interval = 0

        self._bar = _Bar(
            total=total,
            desc=name,
            unit="frame",
            file=stream,
            dynamic_ncols=True,
            mininterval=0,
            leave=True,
        )

    def show(self, progress: Progress) -> None:
        bar = self._bar
        delta = progress.acknowledged - bar.n
        bar.set_postfix_str(f"sent {progress.sent}", refresh=False)
        if delta:
            bar.update(delta)
        else:
            bar.refresh()

    def close(self) -> None:
        self._bar.close()


class LogDisplay:
    """
    Progress as periodic log events, for when there is no terminal.
    """

    log = Logger()

    def __init__(self, name: str) -> None:
        self.name = name

    def show(self, progress: Progress) -> None:
        fraction = progress.fraction
        self.log.info(
            "{stream}: {acknowledged} of {total} frames acknowledged ({percent}), "
            "{sent} sent, {fps} fps, {left} left",
            stream=self.name,
            acknowledged=progress.acknowledged,
            total="?" if progress.total is None else progress.total,
            percent="?%" if fraction is None else f"{fraction:.0%}",
            sent=progress.sent,
            fps="?" if progress.fps is None else f"{progress.fps:.1f}",
            left=_clock(progress.remaining),
        )

    def close(self) -> None:
        pass


def chooseDisplay(name: str, total: int | None, stream=None):
    """
    A L{TerminalDisplay} when C{stream} (the process's original standard
    error by default; twistd replaces C{sys.stderr} with a logging file) is
    a terminal, otherwise a L{LogDisplay}.

    @return: C{(display, interval)}: the display and the seconds between
        its updates.
    """
    if stream is None:
        stream = sys.__stderr__
    try:
        terminal = stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if terminal:
        return TerminalDisplay(name, total, stream), 0.25
    return LogDisplay(name), 10.0


class ProgressReporter(Service):
    """
    Shows a sender's progress while the service runs, and once more when it
    stops.

    @param sender: an object with C{name} and C{summary()} returning an
        object with C{sent} and C{acknowledged} (an
        L{imageproto.sender.flow.FrameSender}).
    @param total: the frames the source holds, or C{None}.
    @param clock: an C{IReactorTime}.
    @param display: an object with C{show(progress)} and C{close()}; chosen
        by L{chooseDisplay} when omitted.
    @param interval: seconds between updates (with C{display}).
    """

    def __init__(
        self, sender, total: int | None, clock, display=None, interval: float = 10.0
    ) -> None:
        self.sender = sender
        self.total = total
        self.clock = clock
        if display is None:
            display, interval = chooseDisplay(sender.name, total)
        self.display = display
        self.interval = interval
        self._meter = RateMeter()
        self._started: float | None = None
        self._loop: LoopingCall | None = None

    def progress(self) -> Progress:
        """
        Sample the sender now.
        """
        now = self.clock.seconds()
        if self._started is None:
            self._started = now
        summary = self.sender.summary()
        acknowledged = summary.acknowledged
        return Progress(
            sent=summary.sent,
            acknowledged=acknowledged,
            total=self.total,
            elapsed=now - self._started,
            fps=self._meter.sample(now, acknowledged),
        )

    def report(self) -> None:
        self.display.show(self.progress())

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.report)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.report()
        self.display.close()


def expectedFrames(spec, count: int = 0) -> int | None:
    """
    How many frames a sender's source will send, for the progress total.

    @param spec: an L{imageproto.sender.specs} source spec; only C{VideoSpec}
        (without C{loop}) and C{ImagesSpec} have a known length.
    @param count: the sender's C{--count} limit, 0 for none.
    @return: the number, or C{None} when unknown.  Reading a video's frame
        count opens the file, so call this before the reactor runs (from
        C{makeService}), not on it.
    """
    from imageproto.sender.specs import ImagesSpec, VideoSpec

    total = None
    if isinstance(spec, ImagesSpec):
        from imageproto.sender.sources import listImages

        total = len(listImages(spec.directory))
    elif isinstance(spec, VideoSpec) and not spec.loop:
        import cv2

        capture = cv2.VideoCapture(spec.path)
        try:
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        total = frames if frames > 0 else None
    if count:
        total = count if total is None else min(total, count)
    return total
