# -*- test-case-name: tests.test_services -*-
"""
Fakes that tests of the sender (and of whatever builds on it) reuse.

  - L{ScriptedSource}: a frame source that hands out a scripted list of
    "images" (any objects; with L{PassthroughEncoder} they are the JPEG
    bytes), an exception to raise, or the end of the source.
  - L{PassthroughEncoder}: an encoder that returns the image unchanged, so
    a scripted source of bytes needs no OpenCV.
  - L{FakeThreadRunner}: a C{runInThread} that records each call and
    returns a Deferred the test fires (C{runNext} calls the function in the
    test's own thread and fires with its result).
  - L{FakeSenderProtocol}: what L{imageproto.sender.flow.FrameSender} sees of a
    connection: recorded frames, a settable C{pressure.paused}, BYEs.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imageproto import wire
from imageproto.common.reactor import defaultReactor
from imageproto.protocol.sending import TransportPressure

__all__ = [
    "waitFor",
    "ScriptedSource",
    "PassthroughEncoder",
    "FakeThreadRunner",
    "FakeSenderProtocol",
]


class ScriptedSource:
    """
    A frame source whose reads follow a script.

    Each entry is returned by one C{read()}; an C{Exception} instance in the
    script is raised instead, and C{None} (or running off the end, for a
    finite source) means the source is exhausted.  A live source that runs
    off the end repeats its last entry.

    @ivar opened: how many times C{open()} was called.
    @ivar closed: how many times C{close()} was called.
    @ivar reads: how many times C{read()} was called.
    """

    def __init__(self, script, live: bool = False, fps=None, openError=None) -> None:
        self.script = list(script)
        self.live = live
        self.fps = fps
        self.openError = openError
        self.description = "scripted source"
        self.opened = self.closed = self.reads = 0

    def open(self) -> None:
        self.opened += 1
        if self.openError is not None:
            raise self.openError

    def nativeFps(self):
        return self.fps

    def read(self):
        index = self.reads
        self.reads += 1
        if index >= len(self.script):
            if not self.live or not self.script:
                return None
            index = len(self.script) - 1
        entry = self.script[index]
        if isinstance(entry, Exception):
            raise entry
        return entry

    def close(self) -> None:
        self.closed += 1


class PassthroughEncoder:
    """
    An encoder whose C{encode(image)} returns C{image}.
    """

    def encode(self, image):
        return image


@define
class _Call:
    f: object
    args: tuple
    deferred: Deferred = field(factory=Deferred)


class FakeThreadRunner:
    """
    A fake C{runInThread}: nothing runs until the test says so.

    @ivar calls: the calls not yet run, oldest first.
    """

    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def __call__(self, f, *args) -> Deferred:
        call = _Call(f, args)
        self.calls.append(call)
        return call.deferred

    def runNext(self):
        """
        Run the oldest pending call now and fire its Deferred with the
        result (or the exception as a failure).

        @return: the result of the call (or the failure).
        """
        call = self.calls.pop(0)
        try:
            result = call.f(*call.args)
        except Exception:
            result = Failure()
            call.deferred.errback(result)
        else:
            call.deferred.callback(result)
        return result

    def runAll(self) -> None:
        """
        Run pending calls, including any they cause, until none is left.
        """
        while self.calls:
            self.runNext()


class FakeSenderProtocol:
    """
    Stands in for a welcomed L{imageproto.protocol.framing.FrameSenderProtocol}.

    @ivar frames: every L{imageproto.wire.Frame} sent, in order.
    @ivar goodbyes: the reasons of BYEs sent.
    """

    peer = "fake-server:1"

    def __init__(self, onResume=None) -> None:
        self.frames = []
        self.goodbyes = []
        # As FrameSenderProtocol does, tell the sender when writing may resume.
        self.pressure = TransportPressure(onResume)

    def sendFrame(self, frame) -> None:
        self.frames.append(frame)

    def sendFrameParts(self, parts: list) -> None:
        # What FrameSender sends (wire.frameParts), as the Frame they encode.
        self.frames.append(wire.decodeMessage(b"".join(parts)[wire.LENGTH_BYTES :]))

    def sayGoodbye(self, reason: str = "") -> None:
        self.goodbyes.append(reason)

    @property
    def seqs(self) -> list[int]:
        return [f.seq for f in self.frames]


def waitFor(condition, timeout: float, what: str, clock=None) -> Deferred:
    """
    Poll C{condition()} every 50 ms on the reactor until it is true, for
    integration tests and benchmarks that watch real processes (files
    appearing, a port listening): they wait on this Deferred, never sleep.

    @param what: named in the L{TimeoutError} after C{timeout} seconds.
    @return: a Deferred that fires with C{None}, or fails with
        L{twisted.internet.defer.TimeoutError}.
    """
    from twisted.internet.defer import TimeoutError
    from twisted.internet.task import LoopingCall

    clock = defaultReactor(clock)
    deadline = clock.seconds() + timeout

    def check():
        if condition():
            loop.stop()
        elif clock.seconds() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    loop = LoopingCall(check)
    loop.clock = clock
    return loop.start(0.05).addCallback(lambda _: None)
