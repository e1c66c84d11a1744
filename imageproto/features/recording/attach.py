# -*- test-case-name: tests.test_recorder -*-
"""
C{--record-dir} as a feature of the receiver: its typed configuration and
the one function that attaches a L{Recorder} to a receiver.
"""

from __future__ import annotations

from attrs import frozen

from imageproto.features.recording.recorder import (
    DEFAULT_FORMAT,
    DEFAULT_SEGMENT_SECONDS,
    Recorder,
)

__all__ = ["RecordingConfig", "attachRecording"]


@frozen
class RecordingConfig:
    """
    Record every stream under C{directory} (absolute).

    A new recording setting is a field here, passed on by L{attachRecording}
    and filled from its option in L{imageproto.tap.config}.

    @ivar segmentSeconds: the longest span of video one file holds.
    @ivar format: C{"mkv"} (the JPEGs as received) or C{"mp4"} (H.264).
    """

    directory: str
    segmentSeconds: float = DEFAULT_SEGMENT_SECONDS
    format: str = DEFAULT_FORMAT


def attachRecording(receiver, config: RecordingConfig) -> Recorder:
    """
    Add a L{Recorder} to an L{imageproto.receiver.service.ReceiverService}:
    a consumer of its pipeline and a child service, so that stopping the
    receiver waits until every queued frame is written and every file
    finished.
    """
    recorder = Recorder(
        config.directory, segmentSeconds=config.segmentSeconds, format=config.format
    )
    receiver.addConsumer(recorder)
    recorder.setServiceParent(receiver)
    return recorder
