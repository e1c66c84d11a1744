# -*- test-case-name: tests.test_sinks -*-
"""
Where accepted frames go: L{IFrameSink} and its implementations.

The L{imageproto.receiver.registry.StreamRegistry} hands every accepted frame, as a
L{ReceivedFrame}, to each sink.  A sink that returns a L{Deferred} from
C{frameReceived} holds back the sender's ACK until it fires (L{SaveDirSink}
does, so an ACK means the frame is on disk); a sink that returns C{None}
does not.
"""

from __future__ import annotations

import itertools
import os
from typing import Callable

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

__all__ = [
    "ReceivedFrame",
    "IFrameSink",
    "LatestFrameHub",
    "SaveDirSink",
    "CallbackSink",
    "framePath",
]


@frozen
class ReceivedFrame:
    """
    One frame as the receiver accepted it.

    @ivar stream: the stream's name.
    @ivar seq: the sender's sequence number (starts again when the sender
        restarts).
    @ivar captureTime: capture time on the sender's clock.
    @ivar sendTime: send time on the sender's clock.
    @ivar receiveTime: receive time on the receiver's clock.
    @ivar jpeg: the JPEG bytes exactly as sent.
    @ivar senderDropped: frames the sender had dropped so far in its session.
    """

    stream: str
    seq: int
    captureTime: float
    sendTime: float
    receiveTime: float
    jpeg: bytes = field(repr=False)
    senderDropped: int = 0

    @property
    def latency(self) -> float:
        """
        Seconds from capture to receipt (includes the two clocks' offset).
        """
        return self.receiveTime - self.captureTime

    def decode(self):
        """
        Decode the JPEG into a BGR C{numpy} array.

        This costs milliseconds per frame: call it in a worker thread (for
        example through C{deferToThread}), never on the reactor.

        @raise ValueError: if OpenCV cannot decode the bytes.
        """
        import cv2
        import numpy

        image = cv2.imdecode(numpy.frombuffer(self.jpeg, numpy.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"frame {self.seq} of {self.stream!r} is not decodable")
        return image


class IFrameSink(Interface):
    """
    A consumer of accepted frames.  All methods are called in the reactor
    thread.
    """

    def frameReceived(frame):
        """
        A frame was accepted.

        @param frame: a L{ReceivedFrame}.
        @return: C{None}, or a L{Deferred} that delays the ACK until it fires
            (an errback makes the receiver REJECT the frame instead).
        """

    def streamStarted(name):
        """
        A stream went live (its first connection, or its first since the
        last one closed).
        """

    def streamStopped(name):
        """
        A stream's connection closed and no newer one replaced it.
        """

    def close():
        """
        The receiver is shutting down.

        @return: C{None}, or a L{Deferred} that fires when the sink is done.
        """


class _SinkBase:
    """
    No-op lifecycle methods for sinks that only care about frames.
    """

    def streamStarted(self, name: str) -> None:
        pass

    def streamStopped(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass


@define(eq=False)
class _Subscription:
    name: str
    callback: Callable


@implementer(IFrameSink)
class LatestFrameHub(_SinkBase):
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


def framePath(directory: str, stream: str, seq: int) -> str:
    """
    Where L{SaveDirSink} stores frame C{seq} of C{stream}:
    C{DIR/<stream>/<seq, 8 digits>.jpg}.
    """
    return os.path.join(directory, stream, f"{seq:08d}.jpg")


_tempNames = itertools.count()


def _writeAtomically(path: str, data: bytes) -> None:
    """
    Write C{data} to a hidden temporary name beside C{path}, then rename it,
    so a reader never sees half a file.  Runs in a worker thread.
    """
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(
        directory, f".{name}.{os.getpid()}.{next(_tempNames)}.part"
    )
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


@implementer(IFrameSink)
class SaveDirSink(_SinkBase):
    """
    Writes each frame's bytes, untouched, to C{DIR/<stream>/<seq>.jpg} (see
    L{framePath}) in a worker thread; the frame is acknowledged only once the
    file is in place.

    A sender that restarts numbers its frames from the start again, so its
    new frames overwrite the old run's files of the same numbers.

    @param directory: the directory to write under (created when needed).
    @param runInThread: C{f(callable, *args) -> Deferred}, running the call
        off the reactor (in production C{partial(deferToThreadPool, reactor,
        pool)}).
    """

    def __init__(self, directory: str, runInThread: Callable[..., Deferred]) -> None:
        self.directory = directory
        self._runInThread = runInThread

    def frameReceived(self, frame: ReceivedFrame) -> Deferred:
        path = framePath(self.directory, frame.stream, frame.seq)
        return self._runInThread(_writeAtomically, path, frame.jpeg)


@implementer(IFrameSink)
class CallbackSink(_SinkBase):
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
