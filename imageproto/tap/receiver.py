# -*- test-case-name: tests.test_tap_receiver -*-
"""
C{twistd imageproto}: the receiver's command line.

To add an option: declare it in L{Options} (check it in C{postOptions}),
carry it in L{imageproto.tap.config.ReceiverConfig}, then use it in
L{buildSinks} (a new destination for frames) or L{buildChildren} (a new
service, such as a web viewer).
"""

from __future__ import annotations

import os

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from imageproto.features.bus import publisher as bus
from imageproto.tap import security
from imageproto.tap.config import ReceiverConfig
from imageproto.wire import DEFAULT_MAX_MESSAGE_BYTES
from imageproto.receiver.service import ReceiverService
from imageproto.receiver.registry import DEFAULT_MAX_STREAMS

__all__ = ["Options", "makeService", "buildSinks", "buildChildren"]

# Small enough to catch a typo, large enough for a real JPEG.
MIN_FRAME_BYTES = 1024
# WELCOME announces the limit in 32 bits.
MAX_FRAME_BYTES = 0xFFFFFFFF


def _positiveInt(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value} is not a positive integer")
    return number


_positiveInt.coerceDoc = "A positive integer."


def _positiveFloat(value: str) -> float:
    number = float(value)
    if not 0 < number < float("inf"):
        raise ValueError(f"{value} is not a positive number")
    return number


_positiveFloat.coerceDoc = "A positive number."


def _number(options, name: str, kind: type, minimum, maximum=None):
    """
    Convert option C{name} to C{kind} in place and check its range, with a
    usage error that names the option.
    """
    raw = options[name]
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        value = None
    if (
        value is None
        or value != value  # NaN
        or value < minimum
        or (maximum is not None and value > maximum)
        or value == float("inf")
    ):
        limits = f"at least {minimum}" if maximum is None else (
            f"between {minimum} and {maximum}"
        )
        raise usage.UsageError(
            f"--{name} {raw}: must be a{'n integer' if kind is int else ' number'} "
            f"{limits}"
        )
    options[name] = value


def portDescription(value: str) -> str:
    """
    Turn C{--port}'s value into a server endpoint description: a bare
    number means TCP on every interface.

    @raise usage.UsageError: if it is neither a port number nor a server
        endpoint description Twisted can parse.
    """
    if value.isdigit():
        port = int(value)
        if port > 65535:
            raise usage.UsageError(f"--port {value}: port numbers end at 65535")
        return f"tcp:{port}"
    try:
        # Parsing opens nothing; the endpoint is built again with the real
        # reactor when the service starts.
        serverFromString(None, value)
    except Exception as e:
        raise usage.UsageError(
            f"--port {value!r} is neither a port number nor a server endpoint "
            f"description such as tcp:8080:interface=127.0.0.1 ({e})"
        )
    return value


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Receive named JPEG frame streams from imageproto senders: acknowledge "
        "each frame, keep per-stream statistics (logged, and written to "
        "--stats-file), and optionally save every frame (--save-dir) or show "
        "each stream in a window (--display)."
    )

    optFlags = [
        ["display", None, "Show each stream in an OpenCV window (needs a GUI "
         "build of OpenCV, opencv-python, and a display)."],
    ]

    optParameters = [
        ["port", "p", "8080",
         "Port number or server endpoint description to listen on, e.g. "
         "tcp:8080:interface=127.0.0.1."],
        ["max-frame-bytes", None, DEFAULT_MAX_MESSAGE_BYTES,
         "Largest message (frame) accepted from a sender, in bytes."],
        ["save-dir", None, None,
         "Write every frame under DIR/<stream>/<session>/<seq>.jpg before acknowledging it; a new sender run never overwrites an earlier one (README: Saved frames)."],
        ["stats-interval", None, 5.0,
         "Seconds between statistics log lines."],
        ["stats-file", None, None,
         "Write statistics as JSON to this file every second and at shutdown."],
        ["max-streams", None, DEFAULT_MAX_STREAMS,
         "How many streams may be connected at once."],
        ["web", None, None,
         "Serve the live viewer (/), MJPEG streams, /api/streams and /metrics "
         "on this port number or server endpoint, e.g. 8081 or "
         "tcp:8081:interface=127.0.0.1."],
        ["record-dir", None, None,
         "Record each stream as video files in DIR, each frame at its capture "
         "time."],
        ["record-format", None, "mkv",
         "Recording format: mkv (each JPEG as received, in Matroska) or mp4 "
         "(re-encoded as H.264, which browsers play)."],
        ["segment-seconds", None, 300.0,
         "Seconds of video per recording file.", _positiveFloat],
        ["detect", None, None,
         "Run a detector on every frame: people, faces, cats, motion, echo, "
         "onnx:PATH or package.module:Class (see imageproto.features.inference.detectors)."],
        ["workers", None, 1, "Detector worker threads.", int],
        ["reply", None, None,
         "What goes back to senders: detections (the default with --detect), "
         "annotated (detections plus the marked-up JPEG) or none."],
        ["onnx-size", None, "640", "onnx: network input size, N or WxH."],
        ["onnx-classes", None, None, "onnx: class names file, one per line."],
        ["onnx-layout", None, "auto", "onnx: output layout, auto, yolov5 "
         "([1,N,5+C]) or yolov8 ([1,4+C,N])."],
        ["confidence", None, None,
         "Minimum confidence (0 to 1) for a detection to be reported, for "
         "every detector, package.module:Class included [default: 0.25; "
         "0 for motion, echo and package.module:Class].", float],
        ["nms", None, 0.45, "onnx: non-maximum suppression IoU threshold.", float],
        ["compat-base64", None, None,
         "Also accept base64 frame streams (see PROTOCOL.md) on this port."],
        ["compat-le32", None, None,
         "Also accept one-image-per-connection little-endian length-prefixed "
         "clients (see PROTOCOL.md) on this port."],
    ] + security.RECEIVER_OPTIONS + bus.RECEIVER_OPTIONS

    def postOptions(self) -> None:
        self["port"] = portDescription(self["port"])
        security.checkReceiverOptions(self)
        _number(self, "max-frame-bytes", int, MIN_FRAME_BYTES, MAX_FRAME_BYTES)
        _number(self, "stats-interval", float, 0.001)
        _number(self, "max-streams", int, 1)
        if self["save-dir"] is not None:
            path = self["save-dir"] = os.path.abspath(self["save-dir"])
            if os.path.exists(path) and not os.path.isdir(path):
                raise usage.UsageError(
                    f"--save-dir {path}: exists and is not a directory"
                )
        if self["stats-file"] is not None:
            path = self["stats-file"] = os.path.abspath(self["stats-file"])
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                raise usage.UsageError(
                    f"--stats-file {path}: directory {parent} does not exist"
                )
            if os.path.isdir(path):
                raise usage.UsageError(f"--stats-file {path}: is a directory")
        if self["web"] is not None:
            from imageproto.features.web.viewer import webEndpoint

            self["web"] = portDescription(webEndpoint(self["web"]))
        if self["record-dir"] is not None:
            path = self["record-dir"] = os.path.abspath(self["record-dir"])
            if os.path.exists(path) and not os.path.isdir(path):
                raise usage.UsageError(
                    f"--record-dir {path}: exists and is not a directory"
                )
        from imageproto.features.recording import FORMATS

        if self["record-format"] not in FORMATS:
            raise usage.UsageError(
                f"--record-format {self['record-format']}: must be one of "
                f"{', '.join(FORMATS)}"
            )
        from imageproto.features.inference.detectors import defaultConfidence
        from imageproto.features.inference.engine import checkOptions

        if self["confidence"] is None:
            self["confidence"] = defaultConfidence(self["detect"])
        elif not 0.0 <= self["confidence"] <= 1.0:
            raise usage.UsageError(
                f"--confidence {self['confidence']}: must be between 0 and 1"
            )
        checkOptions(self)
        bus.checkReceiverOptions(self)
        if self["display"]:
            from imageproto.features.display import DisplayUnavailable, checkDisplay

            try:
                checkDisplay()
            except DisplayUnavailable as e:
                raise usage.UsageError(str(e))


def buildSinks(config: ReceiverConfig, receiver: ReceiverService) -> list:
    """
    The optional destinations for frames, beyond those L{ReceiverService}
    builds itself (the latest-frame hub and C{--save-dir}).
    """
    sinks = []
    if config.display:
        import cv2

        from imageproto.features.display import DisplaySink, WindowThread

        sinks.append(DisplaySink(WindowThread(cv2), receiver.runInThread))
    return sinks


def buildChildren(config: ReceiverConfig, receiver: ReceiverService) -> list:
    """
    The optional services that run beside the receiver.
    """
    children: list = []
    return children


def makeService(options, reactor=None) -> ReceiverService:
    """
    Build (without starting or opening anything) the receiver C{options}
    describe.
    """
    config = ReceiverConfig.fromOptions(options)
    if reactor is None:
        from twisted.internet import reactor
    receiver = ReceiverService(
        security.receiverEndpoint(options, reactor),
        saveDir=config.saveDir,
        statsFile=config.statsFile,
        reactor=reactor,
        maxStreams=config.maxStreams,
        maxMessageBytes=config.maxFrameBytes,
        statsInterval=config.statsInterval,
    )
    security.applyToReceiverFactory(receiver.factory, options)
    for child in buildChildren(config, receiver):
        child.setServiceParent(receiver)
    for sink in buildSinks(config, receiver):
        receiver.addConsumer(sink)
    from imageproto.features.inference.engine import attachToReceiver as attachDetection

    attachDetection(receiver, options)
    bus.attachBus(receiver, bus.BusConfig.fromOptions(options))
    from imageproto.protocol import compat

    for option, protocol in (
        ("compat-base64", compat.Base64StreamProtocol),
        ("compat-le32", compat.LengthPrefixedImageProtocol),
    ):
        if options.get(option) is not None:
            compat.listen(receiver, options[option], protocol).setServiceParent(receiver)
    if options.get("web") or options.get("record-dir"):
        from imageproto.features.web.viewer import LatestDetections, attachToReceiver

        # The viewer draws each stream's newest boxes over its picture.
        detections = LatestDetections()
        receiver.addConsumer(detections)
        attachToReceiver(
            receiver,
            web=options.get("web"),
            recordDir=options.get("record-dir"),
            segmentSeconds=options.get("segment-seconds"),
            detections=detections,
        )
    if options.get("record-dir"):
        from imageproto.features.recording import Recorder

        # attachToReceiver builds the recorder but takes no format (yet).
        for child in receiver:
            if isinstance(child, Recorder):
                child.format = options.get("record-format", "mkv")
    return receiver
