# -*- test-case-name: tests.test_inference -*-
"""
The detector as one more consumer of the receiver's frame pipeline: it
queues frames on an L{imageproto.features.inference.scheduler.InferenceEngine}
and answers each with its RESULT through the frame's channel.
"""

from __future__ import annotations

from twisted.logger import Logger
from zope.interface import implementer

from imageproto.features.inference.scheduler import REPLY_MODES, InferenceEngine
from imageproto.receiver.pipeline import ConsumerBase, IFrameConsumer

__all__ = ["InferenceConsumer"]


@implementer(IFrameConsumer)
class InferenceConsumer(ConsumerBase):
    """
    The detector as a consumer of the receiver's pipeline: queues each frame
    on an L{InferenceEngine} and answers it with the RESULT when it is done.
    The ACK does not wait for the detector.  A finite stream's backlog
    pauses reading from its connection; a live stream's stale frames are
    skipped and get no answer.

    @param engine: the L{InferenceEngine}.
    @param reply: C{"detections"} or C{"annotated"} sends RESULTs to senders
        that take them; C{"none"} only shows them (in the viewer).
    """

    log = Logger()
    # Frames get an answer from this consumer (see FramePipeline.answers).
    answers = True

    def __init__(self, engine: InferenceEngine, reply: str = "detections") -> None:
        if reply not in REPLY_MODES:
            raise ValueError(f"reply must be one of {REPLY_MODES}")
        self.engine = engine
        self.reply = reply

    def frameReceived(self, frame) -> None:
        channel = frame.channel
        wantsImage = bool(getattr(channel, "wantsImage", False))
        d = self.engine.submit(
            frame.stream,
            frame,
            live=frame.live,
            key=channel if channel is not None else frame.stream,
            flow=None if channel is None else _ChannelFlow(channel),
            alive=channel.isOpen if channel is not None else (lambda: True),
            annotated=self.reply == "annotated" or wantsImage,
        )
        toSender = self.reply != "none" or wantsImage

        def answered(result):
            if result is not None:
                frame.reply(result, toSender)

        d.addCallback(answered).addErrback(
            lambda f: self.log.failure(
                "RESULT for frame {seq} of {stream} not delivered",
                f,
                seq=frame.seq,
                stream=frame.stream,
            )
        )


class _ChannelFlow:
    """
    Lets the detector's backlog pause reading from a frame's connection,
    beside the connection's other reasons to pause.
    """

    def __init__(self, channel) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        self._channel.pauseReading("inference")

    def resumeProducing(self) -> None:
        self._channel.resumeReading("inference")
