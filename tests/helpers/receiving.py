"""
The receiver's registry and pipeline without sockets, and stand-ins for
what the receiving side talks to: a recording frame channel, a stub
registry, received frames.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from imageproto import wire
from imageproto.protocol.channel import IFrameChannel
from imageproto.receiver.pipeline import ConsumerBase, FramePipeline, IFrameConsumer
from imageproto.receiver.registry import StreamRegistry
from imageproto.receiver.savedir import savedFrames

__all__ = [
    "FakeStreams",
    "Rejected",
    "RecordingChannel",
    "RecordingConsumer",
    "StubRegistry",
    "deliver",
    "receivedFrame",
    "receiverStack",
    "savedFrame",
    "savedFrames",
]


def receiverStack(clock, consumers=(), **registryOptions):
    """
    A stream registry and frame pipeline wired as the receiver wires them.

    @return: C{(registry, pipeline)}.
    """
    pipeline = FramePipeline(clock, consumers)
    registry = StreamRegistry(clock, pipeline, **registryOptions)
    return registry, pipeline


class Rejected(Exception):
    """
    The pipeline told a L{RecordingChannel} to reject a frame.
    """


@implementer(IFrameChannel)
class RecordingChannel:
    """
    An L{IFrameChannel} that records what the pipeline tells it.

    @ivar acks: acknowledged sequence numbers, in order.
    @ivar rejects: C{(seq, reason)} pairs.
    @ivar results: the RESULTs it was given to send.
    @ivar paused: the reasons reading is paused for now.
    """

    wantsImage = False

    def __init__(self) -> None:
        self.acks: list = []
        self.rejects: list = []
        self.retries: list = []
        self.results: list = []
        self.paused: set = set()
        self.open = True
        self._waiting: dict = {}

    def acknowledge(self, seq: int) -> None:
        self.acks.append(seq)
        for d in self._waiting.pop(seq, []):
            d.callback(None)

    def reject(self, seq: int, reason: str, retry: bool = False) -> None:
        self.rejects.append((seq, reason))
        self.retries.append(retry)
        for d in self._waiting.pop(seq, []):
            d.errback(Rejected(reason))

    def sendResult(self, result: wire.Result) -> None:
        self.results.append(result)

    def isOpen(self) -> bool:
        return self.open

    def pauseReading(self, reason: str) -> None:
        self.paused.add(reason)

    def resumeReading(self, reason: str) -> None:
        self.paused.discard(reason)

    def whenSettled(self, seq: int) -> Deferred:
        """
        A Deferred that fires when frame C{seq} is next acknowledged, or
        fails with L{Rejected} when it is rejected.
        """
        d = Deferred()
        self._waiting.setdefault(seq, []).append(d)
        return d


def deliver(pipeline: FramePipeline, stream, frame: wire.Frame, channel=None) -> Deferred:
    """
    Hand C{frame} of C{stream} to C{pipeline} on C{channel} (a fresh
    L{RecordingChannel} by default).

    @return: a Deferred that fires on the frame's ACK, or fails with
        L{Rejected} on its REJECT.
    """
    if channel is None:
        channel = RecordingChannel()
    settled = channel.whenSettled(frame.seq)
    pipeline.frameReceived(stream, frame, channel)
    return settled


class StubRegistry:
    """
    The receiving protocol's two collaborators in one stand-in: the stream
    registry (it refuses names in C{refusals}) and the frame pipeline (it
    records each frame and settles it on its channel at once, or when the
    Deferred in C{answers} for its seq fires, or, with C{hold}, when the
    test fires the Deferred it appends to C{pending}).

    Give it to a factory as both: C{ReceiverFactory(stub, clock,
    pipeline=stub)}.
    """

    def __init__(self, clock=None, hold: bool = False) -> None:
        from imageproto.receiver.registry import Stream
        from imageproto.receiver.stats import StreamStats

        self._makeStream = lambda name, caps, session: Stream(
            name, StreamStats(), capabilities=caps, session=session
        )
        self.clock = clock
        self.hold = hold
        self.refusals: dict = {}
        self.answers: dict = {}
        self.attached: list = []
        self.frames: list = []
        self.pending: list = []
        self.detached: list = []
        self.clockSamples: list = []

    def attach(self, name, capabilities, session, protocol):
        if name in self.refusals:
            raise self.refusals[name]
        stream = self._makeStream(name, capabilities, session)
        self.attached.append((name, protocol))
        return stream

    def detach(self, stream, protocol):
        self.detached.append((stream.name, protocol))

    def clockSampled(self, stream, protocol, sample):
        self.clockSamples.append((stream.name, sample))

    def frameReceived(self, stream, frame, channel):
        when = None if self.clock is None else self.clock.seconds()
        self.frames.append((stream.name, frame, when))
        answer = self.answers.pop(frame.seq, None)
        if answer is None and self.hold:
            answer = Deferred()
            self.pending.append(answer)
        if answer is None:
            channel.acknowledge(frame.seq)
            return None
        done = Deferred()

        def accepted(_):
            channel.acknowledge(frame.seq)
            done.callback(None)

        def refused(failure):
            from twisted.logger import Logger

            Logger().failure("frame {seq} not accepted", failure, seq=frame.seq)
            channel.reject(frame.seq, "server could not store the frame")
            done.callback(None)

        answer.addCallbacks(accepted, refused)
        return done


def savedFrame(directory: str, stream: str, seq: int) -> str:
    """
    The one saved file of frame C{seq} of C{stream}.
    """
    import os

    [path] = [p for p in savedFrames(directory, stream) if os.path.basename(p) == f"{seq:08d}.jpg"]
    return path


def FakeStreams():
    """
    A registry and pipeline stand-in whose frames stay pending until the
    test fires the Deferreds in its C{pending}.
    """
    return StubRegistry(hold=True)


def receivedFrame(stream="cam", seq=0, jpeg=b"\xff\xd8\xff jpeg \xff\xd9", **kw):
    """
    A L{ReceivedFrame} with plausible times (50ms of latency), any of them
    overridden by C{kw}.
    """
    from imageproto.receiver.consumers import ReceivedFrame

    values = dict(captureTime=10.0, sendTime=10.01, receiveTime=10.05, senderDropped=0)
    values.update(kw)
    return ReceivedFrame(stream=stream, seq=seq, jpeg=jpeg, **values)


@implementer(IFrameConsumer)
class RecordingConsumer(ConsumerBase):
    """
    A pipeline consumer that records what it is told: frames, answers as
    C{(seq, result)}, stream lifecycle events and closes.

    @param hold: make C{frameReceived} return a Deferred per frame, which
        the test fires from C{pending}.
    """

    def __init__(self, hold=False):
        self.hold = hold
        self.frames = []
        self.pending = []
        self.results = []
        self.events = []
        self.closed = 0

    def frameReceived(self, frame):
        self.frames.append(frame)
        if self.hold:
            d = Deferred()
            self.pending.append(d)
            return d
        return None

    def resultReady(self, frame, result):
        self.results.append((frame.seq, result))

    def streamStarted(self, name):
        self.events.append(("started", name))

    def streamStopped(self, name):
        self.events.append(("stopped", name))

    def close(self):
        self.closed += 1
