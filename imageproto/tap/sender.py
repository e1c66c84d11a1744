# -*- test-case-name: tests.test_tap_sender -*-
"""
C{twistd imageproto-sender}: capture frames and stream them to a receiver.

Exit status
-----------

C{twistd} exits 0 whenever its reactor stops, whatever stopped it.  The
sender needs a non-zero status when it fails for good (the server refused
the stream, reconnecting gave up, the source cannot be opened), so
L{exitProcess} stops the reactor and, for a non-zero status only, registers
an C{atexit} handler that flushes stdout and stderr and calls
C{os._exit(status)}.  C{atexit} handlers run after C{twistd} has finished its
own cleanup (the reactor's shutdown triggers, the services' C{stopService},
removing the pid file, closing the log), so nothing is skipped but the
interpreter's final teardown.  An exception raised from a shutdown trigger
would not do: the reactor catches and logs it.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
from functools import partial

from twisted.internet import error
from twisted.logger import Logger
from twisted.python import usage

from imageproto.tap import CommandOptions, checks, commandReactor, security
from imageproto.tap.config import (
    CameraSpec,
    ImagesSpec,
    PatternSpec,
    SenderConfig,
    VideoSpec,
)

__all__ = ["Options", "makeService", "exitProcess"]

DEFAULT_CONNECT = "tcp:localhost:8080"
_log = Logger()


def _atLeast(minimum, kind=int):
    return checks.coercer(kind, minimum, doc=f"At least {minimum}.")


_CHECKS = [
    ("video", checks.existingFile),
    ("images", checks.existingDirectory),
    ("results", checks.directory),
    ("metadata", checks.metadata),
]


class Options(CommandOptions):
    synopsis = (
        "[--video PATH [--loop] | --camera INDEX|URL|picamera2[:N] | --images DIR] "
        "[--connect ENDPOINT [--connect ENDPOINT ...] | --host HOST --port PORT] "
        "[options]"
    )
    longdesc = (
        "Capture frames from a video file, a camera, a folder of images or "
        "(with none of those) a built-in moving test pattern, JPEG-encode "
        "them and stream them to an imageproto receiver, reconnecting with "
        "backoff.  A live source (camera, pattern) drops frames the network "
        "cannot take; a file source waits, and is delivered whole even "
        "across receiver restarts.  A finite source (or --count) ends the "
        "run: exit status 0 once every frame is acknowledged, non-zero if "
        "the receiver refuses the stream or retries run out."
    )

    optFlags = [
        ["loop", None, "With --video: start again at the end."],
        ["no-resume", None, "Send a video or folder from its start even if the "
         "receiver holds frames of it from an earlier run (by default a run "
         "after a crash goes on where the last one stopped)."],
    ]

    optParameters = [
        ["host", None, None, "Receiver host (shorthand for --connect tcp:HOST:PORT)."],
        ["port", "p", None, "Receiver port (shorthand, with --host)", usage.portCoerce],
        ["video", None, None, "Send this video file."],
        ["camera", None, None, "Send this camera: a device index, a URL (rtsp://...), or picamera2[:N] for Raspberry Pi camera N (default 0) through picamera2."],
        ["images", None, None, "Send each image in this folder once, sorted by name."],
        ["name", "n", None, "Stream name [default: this host's name]."],
        ["fps", None, None, "Frames per second; 0 = as fast as possible [default: the source's own rate]", _atLeast(0, float)],
        ["width", None, 0, "Resize frames to this width (0: keep).", _atLeast(0)],
        ["height", None, 0, "Resize frames to this height (0: keep).", _atLeast(0)],
        ["quality", "q", 90, "JPEG quality, 1..100.", checks.coercer(int, 1, 100)],
        ["count", None, 0, "Stop after sending this many frames (0: no limit).", _atLeast(0)],
        ["window", "w", None, "Frames sent but not yet acknowledged, at most [default: 8 for a camera or test pattern, 16 for a video or folder]", _atLeast(1)],
        ["max-delay", None, 5.0, "Longest wait between reconnection attempts, seconds.", _atLeast(0.01, float)],
        ["max-retries", None, None, "Give up after this many failed reconnections [default: never]", _atLeast(0)],
        ["retry-for", None, 60.0, "Seconds to keep sending again a frame the receiver cannot store for now (a full disk) before counting it as not stored and exiting non-zero.", _atLeast(0, float)],
        ["results", None, None, "Write every detector RESULT to this folder: results.jsonl, annotated images, summary.json; the run ends once every frame's RESULT is in."],
        ["metadata", None, None, "Put this JSON object or string on every frame, e.g. '{\"site\": \"door\"}' (at most 4096 bytes; receivers that do not take metadata get frames without it)."],
    ] + security.SENDER_OPTIONS

    def __init__(self) -> None:
        super().__init__()
        self["connect"] = None
        self._connects: list[str] = []

    def opt_connect(self, value: str) -> None:
        self._connects.append(value)

    # usage.Options prints the docstring as it is: one line, no indentation.
    opt_connect.__doc__ = (
        f"Client endpoint of the receiver [default: {DEFAULT_CONNECT}]. Repeat it "
        "to name further receivers: when one fails or goes away, the sender moves "
        "to the next, in turn, and a video or folder still loses nothing."
    )
    opt_c = opt_connect

    def postOptions(self) -> None:
        sources = [k for k in ("video", "camera", "images") if self[k] is not None]
        if len(sources) > 1:
            raise usage.UsageError(
                "choose one source, not " + " and ".join("--" + s for s in sources)
            )
        if self["loop"] and self["video"] is None:
            raise usage.UsageError("--loop applies to --video only")
        checks.apply(self, _CHECKS)
        if self["images"] is not None:
            from imageproto.sender.sources import listImages

            if not listImages(self["images"]):
                raise usage.UsageError(f"no image files in {self['images']}")
        if self["camera"] is not None:
            self["camera"] = self._camera(self["camera"].strip())
        self["connect"] = checks.clientEndpoint("connect", self._endpoint())
        # The receivers after the first of a repeated --connect.
        self["failover"] = [
            checks.clientEndpoint("connect", value) for value in self._connects[1:]
        ]
        security.checkSenderOptions(self)
        if self["name"] is None:
            self["name"] = socket.gethostname() or "imageproto"
        if not self["name"] or len(self["name"].encode("utf-8")) > 255:
            raise usage.UsageError("--name must be 1 to 255 bytes of UTF-8")
        # Not an option: a testing aid that only the environment sets.
        self["clock-skew"] = checks.clockSkew(os.environ)
        # Built once here, so that a bad token file is a usage error before
        # anything starts; makeService uses it.
        self.config = SenderConfig.fromOptions(self)

    def _camera(self, camera: str):
        if not camera:
            raise usage.UsageError("--camera needs a device index or a URL")
        if camera.isdigit():
            return int(camera)
        if not camera.startswith("picamera2"):
            return camera
        from imageproto.sender import sources

        try:
            index = sources.parsePicamera2(camera)
            if index is None:
                return camera
            sources.checkPicamera2()
        except (ValueError, sources.CaptureError) as e:
            raise usage.UsageError(str(e)) from None
        return sources.Picamera2Device(
            index, self["width"], self["height"], self["fps"] or None
        )

    def _endpoint(self) -> str:
        host, port = self["host"], self["port"]
        if self._connects:
            if host is not None or port is not None:
                raise usage.UsageError("use --connect or --host/--port, not both")
            return self._connects[0]
        if host is not None or port is not None:
            return f"tcp:{host or 'localhost'}:{port or 8080}"
        return DEFAULT_CONNECT


def exitProcess(reactor, status: int) -> None:
    """
    End the process with C{status} once twistd has shut down cleanly (see
    the module docstring).
    """
    if status:
        atexit.register(_hardExit, status)
    try:
        reactor.stop()
    except error.ReactorNotRunning:
        pass


def _hardExit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def buildSource(spec):
    """
    The L{imageproto.sender.sources} source for a L{SenderConfig}'s C{source}.
    """
    from imageproto.sender import sources

    if isinstance(spec, VideoSpec):
        return sources.VideoFileSource(spec.path, spec.loop)
    if isinstance(spec, CameraSpec):
        return sources.CameraSource(spec.device)
    if isinstance(spec, ImagesSpec):
        return sources.ImageFolderSource(spec.directory)
    if isinstance(spec, PatternSpec):
        return sources.PatternSource(spec.width, spec.height)
    raise TypeError(f"not a source spec: {spec!r}")


def makeService(options, reactor=None):
    """
    Build the sender's services; nothing is opened until they start.

    @param options: parsed L{Options}; their C{config} is used.

    @return: a L{imageproto.sender.service.SenderService}.
    """
    reactor = commandReactor(reactor)
    from imageproto.sender.sources import Encoder
    from imageproto.protocol.factories import SenderFactory
    from imageproto.sender.flow import FrameSender
    from imageproto.sender.service import (
        CaptureService,
        SenderConnectionService,
        SenderService,
    )

    config: SenderConfig = options.config
    source = buildSource(config.source)
    # The clock frames and PONGs are stamped with; timers stay on the
    # reactor (a skewed clock's DelayedCalls would report unskewed times).
    wallClock = reactor
    if config.clockSkew:
        from imageproto.protocol.clock import SkewedClock

        wallClock = SkewedClock(reactor, config.clockSkew)
        _log.warn(
            "{variable}: this sender's clock reads {skew} s off (a testing aid)",
            variable=checks.CLOCK_SKEW_VARIABLE,
            skew=config.clockSkew,
        )
    results = config.results
    session = None
    if isinstance(config.source, (VideoSpec, ImagesSpec)) and config.resume:
        from imageproto.sender.resume import sourceSession

        kind, path = (
            ("video", config.source.path)
            if isinstance(config.source, VideoSpec)
            else ("images", config.source.directory)
        )
        session = sourceSession(
            config.name,
            kind,
            path,
            (config.width, config.height, config.quality, config.count,
             getattr(config.source, "loop", False)),
        )
    sender = FrameSender(
        config.name,
        source.live,
        wallClock,
        window=config.window,
        session=session,
        awaitResults=results is not None,
        resumable=session is not None,
        retryFor=config.retryFor,
        metadata=config.metadata,
    )
    sink = sender
    if results is not None:
        from imageproto.sender.sources import listImages
        from imageproto.sender.results import ResultsTracker, ResultsWriter

        writer = ResultsWriter(results, reactor=reactor)
        images = listImages(config.source.directory) if isinstance(config.source, ImagesSpec) else ()
        sink = writer.tracker = ResultsTracker(sender, writer.write, reactor, source, images)
        sender.onResult = sink.resultReceived
    factory = SenderFactory(
        sender,
        clock=reactor,
        maxDelay=config.maxDelay,
        maxRetries=config.maxRetries,
    )
    security.applyToSenderFactory(factory, config.security, config.limits)
    factory.wallClock = wallClock
    connection = SenderConnectionService(
        [security.senderEndpoint(c, config.security, reactor) for c in config.endpoints],
        factory,
        list(config.endpoints),
        reactor,
    )
    captureService = CaptureService(
        source,
        sink,
        config.fps,
        Encoder(config.width, config.height, config.quality),
        clock=reactor,
        count=config.count,
        now=wallClock.seconds,
    )
    service = SenderService(
        sender, connection, captureService, partial(exitProcess, reactor)
    )
    if results is not None:
        writer.setServiceParent(service)
    if isinstance(config.source, (VideoSpec, ImagesSpec)):
        # A file or folder has an end: show how far along it is.
        from imageproto.sender.progress import ProgressReporter, expectedFrames

        total = expectedFrames(config.source, config.count)
        ProgressReporter(sender, total, reactor).setServiceParent(service)
    return service
