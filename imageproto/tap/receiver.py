# -*- test-case-name: tests.test_tap_receiver -*-
"""
C{twistd imageproto}: the receiver's command line.

To add an option:

  1. declare it in L{Options} (in C{optParameters} or C{optFlags}; an option
     of both commands, such as a security one, in L{imageproto.tap.security});
  2. check its value in C{postOptions}: add a C{(name, check)} pair from
     L{imageproto.tap.checks} to C{_CHECKS}, or write a new check there;
  3. carry it in the feature's frozen config (such as
     L{imageproto.features.recording.RecordingConfig}), filled in
     L{imageproto.tap.config.ReceiverConfig.fromOptions};
  4. use it in the feature's attach function, which L{makeService} calls.

A new feature gets its own config class and attach function, and one line
in L{makeService}.  Feature modules never see the options.
"""

from __future__ import annotations

from twisted.python import usage

from imageproto.features.bus.service import attachBus
from imageproto.features.compat import attachCompat
from imageproto.features.display import DisplayUnavailable, attachDisplay, checkDisplay
from imageproto.features.inference.engine import REPLY_MODES, attachInference
from imageproto.features.recording import attachRecording
from imageproto.features.web.viewer import attachWeb
from imageproto.protocol.descriptors import DescriptorWatch
from imageproto.receiver.registry import DEFAULT_MAX_STREAMS
from imageproto.receiver.service import ReceiverService
from imageproto.tap import CommandOptions, bus, checks, commandReactor, detect, security
from imageproto.tap.config import ReceiverConfig
from imageproto.wire import DEFAULT_MAX_MESSAGE_BYTES

__all__ = ["Options", "makeService"]

# Small enough to catch a typo, large enough for a real JPEG.
MIN_FRAME_BYTES = 1024
# WELCOME announces the limit in 32 bits.
MAX_FRAME_BYTES = 0xFFFFFFFF

# Each value's check, in the order the errors are reported; the security
# options are checked next, by security.checkReceiverOptions.
_CHECKS = [
    ("port", checks.endpoint),
    ("max-frame-bytes", checks.number(int, MIN_FRAME_BYTES, MAX_FRAME_BYTES)),
    ("stats-interval", checks.number(float, 0.001)),
    ("max-streams", checks.number(int, 1)),
    ("save-dir", checks.directory),
    ("stats-file", checks.newFile),
    ("web", checks.endpoint),
    ("record-dir", checks.directory),
    ("workers", checks.number(int, 1)),
    ("compat-base64", checks.endpoint),
    ("compat-le32", checks.endpoint),
    ("web-max-connections", checks.number(int, 1)),
    ("web-idle-timeout", checks.number(float, 0.001)),
    ("compat-max-connections", checks.number(int, 1)),
]


class Options(CommandOptions):
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
         "Write every frame under DIR/<stream>/<session>/<seq>.jpg (its metadata, if any, beside it as <seq>.json) before acknowledging it; a new sender run never overwrites an earlier one (README: Saved frames)."],
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
         "Seconds of video per recording file.",
         checks.coercer(float, above=0, doc="A positive number.")],
        ["workers", None, 1, "Detector worker threads.", int],
        ["reply", None, None,
         "What goes back to senders: detections (the default with --detect), "
         "annotated (detections plus the marked-up JPEG) or none."],
        ["compat-base64", None, None,
         "Also accept base64 frame streams (see PROTOCOL.md) on this port "
         "number or server endpoint. UNAUTHENTICATED (no token, no TLS) and "
         "on every interface unless bound, e.g. tcp:9000:interface=127.0.0.1."],
        ["compat-le32", None, None,
         "Also accept one-image-per-connection little-endian length-prefixed "
         "clients (see PROTOCOL.md) on this port number or server endpoint. "
         "UNAUTHENTICATED (no token, no TLS) and on every interface unless "
         "bound, e.g. tcp:9001:interface=127.0.0.1."],
        ["web-max-connections", None, 512,
         "Connections to --web over this are closed at once (lowered at start "
         "if need be so that viewers can never use the file descriptors "
         "senders need)."],
        ["web-idle-timeout", None, 30.0,
         "Close a --web connection with no request in progress after this "
         "many seconds (a viewer watching MJPEG is never idle)."],
        ["compat-max-connections", None, 64,
         "Connections to each compat port over this are closed at once "
         "(lowered at start like --web-max-connections)."],
    ] + detect.OPTIONS + security.RECEIVER_OPTIONS + bus.RECEIVER_OPTIONS

    def postOptions(self) -> None:
        checks.apply(self, _CHECKS)
        security.checkReceiverOptions(self)
        reply = self["reply"]
        if reply is None:
            reply = self["reply"] = "detections" if self["detect"] else "none"
        if reply not in REPLY_MODES:
            raise usage.UsageError(f"--reply must be one of {', '.join(REPLY_MODES)}")
        if reply != "none" and not self["detect"]:
            raise usage.UsageError(f"--reply {reply} needs --detect")
        from imageproto.features.recording import FORMATS

        if self["record-format"] not in FORMATS:
            raise usage.UsageError(
                f"--record-format {self['record-format']}: must be one of "
                f"{', '.join(FORMATS)}"
            )
        detect.checkOptions(self)
        bus.checkReceiverOptions(self)
        if self["display"]:
            try:
                checkDisplay()
            except DisplayUnavailable as e:
                raise usage.UsageError(str(e))
        # Built once here, so that a bad token file or detector is a usage
        # error before anything starts; makeService uses it.
        self.config = ReceiverConfig.fromOptions(self)


def makeService(options, reactor=None) -> ReceiverService:
    """
    Build (without starting or opening anything) the receiver C{options}
    describe: a L{ReceiverService} with each feature attached.

    @param options: parsed L{Options}; their C{config} is used.
    """
    config: ReceiverConfig = options.config
    reactor = commandReactor(reactor)
    receiver = ReceiverService(
        security.receiverEndpoint(config.port, config.security, reactor),
        saveDir=config.saveDir,
        statsFile=config.statsFile,
        reactor=reactor,
        maxStreams=config.maxStreams,
        maxMessageBytes=config.maxFrameBytes,
        statsInterval=config.statsInterval,
    )
    receiver.exitOnListenFailure = True
    security.applyToReceiverFactory(receiver.factory, config.security, config.limits)
    if config.display:
        attachDisplay(receiver)
    if config.inference is not None:
        attachInference(receiver, config.inference)
    caps = [s.connectionCap for s in attachCompat(receiver, config.compat)]
    recorder = None
    if config.recording is not None:
        recorder = attachRecording(receiver, config.recording)
    if config.web is not None:
        service, root = attachWeb(receiver, config.web, recorder=recorder)
        caps.append(service.connectionCap)
    # No number of viewer or compat connections may stop senders connecting.
    DescriptorWatch(
        [cap for cap in caps if cap is not None],
        lambda: receiver.factory.maxConnections,
        "raise the limit (ulimit -n, LimitNOFILE= in systemd) or lower "
        "--web-max-connections, --compat-max-connections or --max-connections",
    ).setServiceParent(receiver)
    attachBus(receiver, config.bus)
    return receiver
