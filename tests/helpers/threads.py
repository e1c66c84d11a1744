"""
Fake C{runInThread}s built on L{imageproto.testing.FakeThreadRunner}.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imageproto.testing import FakeThreadRunner

__all__ = ["FakeThreads", "InferenceThreads"]


class _PendingCall(NamedTuple):
    """
    One call waiting in a fake thread: C{(f, args, deferred)}, so tests can
    unpack it or index it as well as use the attribute names.
    """

    f: object
    args: tuple
    deferred: Deferred


class FakeThreads(FakeThreadRunner):
    """
    A C{runInThread} that records calls and runs them only when the test
    says so, one round at a time.

    Unlike L{FakeThreadRunner.runAll}, L{runAll} here runs only the calls
    already pending; calls they cause wait for the next C{runAll}, as a
    worker thread's next job would.  Tests use that to step through work
    queued behind work (the newest frame decoded after the one in hand,
    the final stats write after the one in progress).

    @ivar calls: the pending calls, oldest first, as C{(f, args, deferred)}.
    """

    def __call__(self, f, *args) -> Deferred:
        call = _PendingCall(f, args, Deferred())
        self.calls.append(call)
        return call.deferred

    def runAll(self) -> None:
        """
        Run the calls pending now, oldest first, firing each one's Deferred
        with its result (or its exception as a failure).
        """
        for _ in range(len(self.calls)):
            self.runNext()


class InferenceThreads(FakeThreads):
    """
    A C{runInThread} for the inference engine: it records each call and
    the test answers call C{index} as the detector would, with L{finish} or
    L{fail}, in any order.
    """

    def finish(self, index: int, detections=(), jpeg: bytes = b"") -> None:
        """
        Answer call C{index} with C{detections} (and an annotated C{jpeg}),
        taking 1234 microseconds.
        """
        from imageproto.features.inference.processor import Processed

        self.calls[index].deferred.callback(Processed(list(detections), 1234, jpeg))

    def fail(self, index: int) -> None:
        """
        Fail call C{index} with a C{RuntimeError("boom")}.
        """
        self.calls[index].deferred.errback(Failure(RuntimeError("boom")))
