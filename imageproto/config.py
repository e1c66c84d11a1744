# -*- test-case-name: tests.test_config -*-
"""
attrs configuration classes, each built from parsed twistd Options by a named
constructor (C{ReceiverConfig.fromOptions}, C{SenderConfig.fromOptions}).
"""

from __future__ import annotations

from attrs import field, frozen  # noqa: F401

from imageproto.protocol import DEFAULT_MAX_MESSAGE_BYTES

__all__: list[str] = ["ReceiverConfig"]


@frozen
class ReceiverConfig:
    """
    What C{twistd imageproto} was asked to do.

    @ivar port: a server endpoint description (C{"tcp:8080"}).
    @ivar maxFrameBytes: the largest message read from a sender.
    @ivar saveDir: absolute directory frames are written under, or C{None}.
    @ivar display: show each stream in an OpenCV window.
    @ivar statsInterval: seconds between statistics log lines.
    @ivar statsFile: absolute path of the JSON statistics file, or C{None}.
    @ivar maxStreams: how many streams may be live at once.
    """

    port: str = "tcp:8080"
    maxFrameBytes: int = DEFAULT_MAX_MESSAGE_BYTES
    saveDir: str | None = None
    display: bool = False
    statsInterval: float = 5.0
    statsFile: str | None = None
    maxStreams: int = 64

    @classmethod
    def fromOptions(cls, options) -> "ReceiverConfig":
        """
        Build from a parsed L{imageproto.tap.receiver.Options}.
        """
        return cls(
            port=options["port"],
            maxFrameBytes=options["max-frame-bytes"],
            saveDir=options["save-dir"],
            display=bool(options["display"]),
            statsInterval=options["stats-interval"],
            statsFile=options["stats-file"],
            maxStreams=options["max-streams"],
        )
