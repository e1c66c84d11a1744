# -*- test-case-name: tests.test_recorder -*-
"""
Recording streams as segmented video files (C{--record-dir}).

L{Recorder} is an L{imageproto.receiver.consumers.IFrameSink} and a
service.  Each stream goes to files of at most C{segmentSeconds} of video,
named for the stream and the segment's start (UTC, receive time)::

    DIR/<stream>-20250101T120000Z.mkv

Every frame's presentation time is its capture time (on the sender's
clock) less the segment's first, in milliseconds, so a recording replays
at the speed it was captured, pauses included; a capture clock that goes
backwards or leaps is replaced by our receive times
(L{media.Timeline}).  Two formats (C{--record-format}):

  - C{mkv} (the default): Matroska holding each JPEG exactly as received,
    no decoding or re-encoding (codec V_MJPEG).  Written through to the
    OS frame by frame; a file cut short by a SIGKILL still plays.
  - C{mp4}: H.264 (libx264, yuv420p) in fragmented MP4, which browsers
    play; costs a JPEG decode and an H.264 encode per frame in the worker
    thread, and a SIGKILL loses up to about a second.

A stream's file is finished when the stream stops or its frame size
changes, and C{stopService} waits until every queued frame is written and
every file is finished.
"""

from imageproto.features.recording.media import FORMATS, Timeline, jpegSize
from imageproto.features.recording.recorder import (
    DEFAULT_FORMAT,
    DEFAULT_SEGMENT_SECONDS,
    Recorder,
    segmentName,
)

__all__ = [
    "Recorder",
    "segmentName",
    "DEFAULT_SEGMENT_SECONDS",
    "DEFAULT_FORMAT",
    "FORMATS",
    "Timeline",
    "jpegSize",
]
