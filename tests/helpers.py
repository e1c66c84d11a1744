"""
Helpers several test modules share: wire bytes, tiny JPEGs, the receiver's
registry and pipeline without sockets, and a recording frame channel.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from imageproto import wire
from imageproto.protocol.channel import IFrameChannel
from imageproto.receiver.pipeline import FramePipeline
from imageproto.receiver.registry import StreamRegistry
from imageproto.receiver.savedir import savedFrames

__all__ = [
    "FAKE_JPEG",
    "Rejected",
    "RecordingChannel",
    "deliver",
    "framed",
    "makeJpeg",
    "receiverStack",
]

# The smallest bytes that pass wire.isJpeg: SOI, a marker byte, EOI.
FAKE_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 8 + b"\xff\xd9"


def framed(message: wire.Message) -> bytes:
    """
    C{message} as it travels: encoded, behind its 4-byte length prefix.
    """
    return wire.encodeFramed(message)


def makeJpeg(width: int = 64, height: int = 48, value: int = 128, quality: int = 90) -> bytes:
    """
    A real JPEG of a flat grey picture with a white square, made with OpenCV.
    """
    import numpy

    from imageproto.common.jpeg import encodeJpeg

    image = numpy.full((height, width, 3), value, numpy.uint8)
    image[height // 4 : height // 2, width // 4 : width // 2] = 255
    return encodeJpeg(image, quality)


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


# -- real twistd processes ---------------------------------------------------

import re  # noqa: E402

# The sender's closing summary line, as it logs it.
SUMMARY = re.compile(
    r"done: (?P<sent>\d+) sent, (?P<acknowledged>\d+) acknowledged, .*?"
    r"(?P<resent>\d+) resent, (?P<reconnects>\d+) reconnects"
)


import os  # noqa: E402
import sys  # noqa: E402

from twisted.internet import defer, error, reactor  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402

from imageproto.tap import twistdCommand  # noqa: E402


class _Process(ProcessProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.output = bytearray()
        self.ended = defer.Deferred()
        self.status = None

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.status = reason.value.exitCode
        self.ended.callback(self.status)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


class TwistdProcesses:
    """
    A TestCase mixin: C{spawn} runs C{twistd -n ARGS} in C{self.directory}/NAME
    and kills it at cleanup if the test has not ended it.
    """

    def spawn(self, name: str, args, env=None) -> _Process:
        process = _Process(name)
        cwd = os.path.join(self.directory, name)
        os.makedirs(cwd, exist_ok=True)
        transport = reactor.spawnProcess(
            process, sys.executable, twistdCommand() + list(args), env=env or os.environ.copy(), path=cwd
        )

        def cleanup():
            if process.status is None:
                try:
                    transport.signalProcess("KILL")
                except error.ProcessExitedAlready:
                    return None
                return process.ended
            return None

        self.addCleanup(cleanup)
        return process
