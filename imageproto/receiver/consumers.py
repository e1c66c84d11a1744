# -*- test-case-name: tests.test_sinks -*-
"""
The receiver's own frame consumers (see L{imageproto.receiver.pipeline}):
the latest-frame hub the viewer reads and the application's callback; the
C{--save-dir} writer is in L{imageproto.receiver.savedir}.

A consumer that returns a L{Deferred} from C{frameReceived} holds back the
sender's ACK until it fires (L{SaveDirSink} does, so an ACK means the frame
is on disk); one that returns C{None} does not.
"""

from __future__ import annotations

from typing import Callable

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from imageproto.receiver.pipeline import (
    ConsumerBase,
    IFrameConsumer,
    IFrameSink,
    ReceivedFrame,
)

__all__ = [
    "ReceivedFrame",
    "IFrameSink",
    "IFrameConsumer",
    "ConsumerBase",
    "LatestFrameHub",
    "CallbackSink",
    "DecodingSink",
]


@define(eq=False)
class _Subscription:
    name: str
    callback: Callable


@implementer(IFrameConsumer)
class LatestFrameHub(ConsumerBase):
    """
    Keeps the latest frame of each stream and tells subscribers about new
    ones: what a live viewer (MJPEG, C{latest.jpg}) reads from.

    The latest frame of a stream stays after it stops, so a viewer can still
    show the last picture.
    """

    log = Logger()

    def __init__(self) -> None:
        self._latest: dict[str, ReceivedFrame] = {}
        self._subscriptions: dict[str, set[_Subscription]] = {}

    def latest(self, name: str) -> ReceivedFrame | None:
        """
        The newest frame of stream C{name}, or C{None}.
        """
        return self._latest.get(name)

    def names(self) -> list[str]:
        """
        The names of the streams that have sent at least one frame, sorted.
        """
        return sorted(self._latest)

    def subscribe(self, name: str, callback: Callable) -> _Subscription:
        """
        Call C{callback(frame)} with each new frame of stream C{name}.

        @return: an opaque subscription for L{unsubscribe}.
        """
        subscription = _Subscription(name, callback)
        self._subscriptions.setdefault(name, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: _Subscription) -> None:
        """
        Stop a subscription; unsubscribing twice is harmless.
        """
        subscribers = self._subscriptions.get(subscription.name)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[subscription.name]

    def frameReceived(self, frame: ReceivedFrame) -> None:
        self._latest[frame.stream] = frame
        # A copy: a callback may unsubscribe (its viewer went away).
        for subscription in list(self._subscriptions.get(frame.stream, ())):
            try:
                subscription.callback(frame)
            except Exception:
                self.log.failure(
                    "subscriber to {stream} failed; unsubscribing it",
                    stream=frame.stream,
                )
                self.unsubscribe(subscription)


@implementer(IFrameConsumer)
class CallbackSink(ConsumerBase):
    """
    Calls C{callback(frame)} with each L{ReceivedFrame}: the hook for
    applications that embed the receiver.

    The callback runs in the reactor thread, so it must be quick; it may
    return a L{Deferred} to hold back the frame's ACK until it fires.
    """

    def __init__(self, callback: Callable) -> None:
        self._callback = callback

    def frameReceived(self, frame: ReceivedFrame):
        result = self._callback(frame)
        return result if isinstance(result, Deferred) else None


@implementer(IFrameConsumer)
class DecodingSink(ConsumerBase):
    """
    Decodes every frame in a worker thread and calls C{callback(frame,
    image)} in the reactor thread with the BGR numpy image: the hook for
    applications that want pixels (C{ReceiverService(..., onImage=...)}).

    One hand-off to the pool and one back per frame, no Deferred of the
    application's own; the frame is acknowledged once the callback has
    returned (or, if it returns a L{Deferred}, once that fires).  A frame
    that cannot be decoded is rejected.

    @param runInThread: C{f(callable, *args) -> Deferred} running in a
        worker pool (the receiver's own).
    """

    def __init__(self, callback: Callable, runInThread: Callable) -> None:
        self._callback = callback
        self._runInThread = runInThread

    def frameReceived(self, frame: ReceivedFrame) -> Deferred:
        return self._runInThread(frame.decode).addCallback(self._decoded, frame)

    def _decoded(self, image, frame: ReceivedFrame):
        return self._callback(frame, image)
