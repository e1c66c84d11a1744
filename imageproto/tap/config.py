# -*- test-case-name: tests.test_config -*-
"""
attrs configuration classes, each built from parsed twistd Options by a named
constructor (C{ReceiverConfig.fromOptions}, C{SenderConfig.fromOptions}).
"""

from __future__ import annotations

from attrs import field, frozen  # noqa: F401

from imageproto.wire import DEFAULT_MAX_MESSAGE_BYTES

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


@frozen
class VideoSpec:
    """
    Send a video file, paced at its own rate unless C{--fps}.

    @ivar path: the absolute path.
    @ivar loop: start again at the end instead of stopping.
    """

    path: str
    loop: bool = False


@frozen
class CameraSpec:
    """
    Send a live camera: an C{int} device index or a URL OpenCV opens.
    """

    device: int | str


@frozen
class ImagesSpec:
    """
    Send each image in a folder (absolute path) once, sorted by name.
    """

    directory: str


@frozen
class PatternSpec:
    """
    Send the built-in moving test pattern.
    """

    width: int = 640
    height: int = 480


@frozen
class SenderConfig:
    """
    What C{twistd imageproto-sender} was asked to do.

    @ivar connect: a client endpoint description (C{"tcp:localhost:8080"}).
    @ivar name: the stream name.
    @ivar source: a L{VideoSpec}, L{CameraSpec}, L{ImagesSpec} or
        L{PatternSpec}.
    @ivar fps: frames per second, C{None} for the source's own rate, 0 for
        as fast as the pipeline goes.
    @ivar width: resize to this width (0: keep).
    @ivar height: resize to this height (0: keep).
    @ivar quality: JPEG quality, 1 to 100.
    @ivar count: stop after this many frames (0: no limit).
    @ivar window: frames unacknowledged at most.
    @ivar maxDelay: the longest wait between reconnection attempts, seconds.
    @ivar maxRetries: consecutive failed attempts before giving up, or
        C{None} to retry forever.
    """

    connect: str = "tcp:localhost:8080"
    name: str = "imageproto"
    source: VideoSpec | CameraSpec | ImagesSpec | PatternSpec = PatternSpec()
    fps: float | None = None
    width: int = 0
    height: int = 0
    quality: int = 90
    count: int = 0
    window: int = 8
    maxDelay: float = 5.0
    maxRetries: int | None = None

    @classmethod
    def fromOptions(cls, options) -> "SenderConfig":
        """
        Build from a parsed L{imageproto.tap.sender.Options}.
        """
        if options["video"]:
            source = VideoSpec(options["video"], bool(options["loop"]))
        elif options["camera"] is not None:
            source = CameraSpec(options["camera"])
        elif options["images"]:
            source = ImagesSpec(options["images"])
        else:
            source = PatternSpec(options["width"] or 640, options["height"] or 480)
        return cls(
            connect=options["connect"],
            name=options["name"],
            source=source,
            fps=options["fps"],
            width=options["width"],
            height=options["height"],
            quality=options["quality"],
            count=options["count"],
            window=options["window"],
            maxDelay=options["max-delay"],
            maxRetries=options["max-retries"],
        )


__all__ += [
    "SenderConfig",
    "VideoSpec",
    "CameraSpec",
    "ImagesSpec",
    "PatternSpec",
]
