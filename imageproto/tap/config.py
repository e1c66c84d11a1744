# -*- test-case-name: tests.test_tap_receiver,tests.test_tap_sender -*-
"""
The one typed configuration of each twistd command, L{ReceiverConfig} and
L{SenderConfig}, built by C{fromOptions} from Options whose C{postOptions}
has checked every value.  A receiver feature's part is that feature's own
frozen config class (L{InferenceConfig}, L{WebConfig}, L{RecordingConfig},
L{CompatConfig}), which its attach function takes; the feature never sees
the options.  Only this package reads twistd options.
"""

from __future__ import annotations

import os

from attrs import frozen
from twisted.python import usage

from imageproto.features.compat import CompatConfig
from imageproto.features.inference.engine import InferenceConfig
from imageproto.features.recording import RecordingConfig
from imageproto.features.bus.publisher import BusConfig  # noqa: F401
from imageproto.tap.bus import busConfig
from imageproto.sender.specs import CameraSpec, ImagesSpec, PatternSpec, VideoSpec
from imageproto.features.web.viewer import WebConfig
from imageproto.tap import security
from imageproto.tap.security import (
    LimitsConfig,
    SecurityConfig,
    SenderLimitsConfig,
    SenderSecurityConfig,
)
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
    @ivar security: tokens and client certificates.
    @ivar limits: per-connection limits and liveness.
    @ivar inference: the detector to run, or C{None}.
    @ivar web: the live viewer, or C{None}.
    @ivar recording: where to record, or C{None}.
    @ivar compat: the compatibility listeners.
    @ivar bus: the Redis bus to publish frames to, or C{None}.
    """

    port: str = "tcp:8080"
    maxFrameBytes: int = DEFAULT_MAX_MESSAGE_BYTES
    saveDir: str | None = None
    display: bool = False
    statsInterval: float = 5.0
    statsFile: str | None = None
    maxStreams: int = 64
    security: SecurityConfig = SecurityConfig()
    limits: LimitsConfig = LimitsConfig()
    inference: InferenceConfig | None = None
    web: WebConfig | None = None
    recording: RecordingConfig | None = None
    compat: CompatConfig = CompatConfig()
    bus: "BusConfig | None" = None

    @classmethod
    def fromOptions(cls, options) -> "ReceiverConfig":
        """
        Build from a parsed L{imageproto.tap.receiver.Options}, reading the
        token file and loading the detector (once, so that a missing model
        stops twistd before any sender is accepted).

        @raise usage.UsageError: naming what is wrong.
        """
        web, recording = webConfig(options), recordingConfig(options)
        return cls(
            port=options["port"],
            maxFrameBytes=options["max-frame-bytes"],
            saveDir=options["save-dir"],
            display=bool(options["display"]),
            statsInterval=options["stats-interval"],
            statsFile=options["stats-file"],
            maxStreams=options["max-streams"],
            security=security.receiverSecurity(options),
            limits=security.receiverLimits(options),
            bus=busConfig(options),
            inference=_inference(options),
            web=web,
            recording=recording,
            compat=CompatConfig(
                options["compat-base64"],
                options["compat-le32"],
                maxConnections=options["compat-max-connections"],
            ),
        )


def _onnxSize(value) -> tuple:
    text = str(value).lower().strip()
    width, _, height = text.partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError:
        raise ValueError(f"--onnx-size {value!r} is not N or WxH") from None
    if min(size) < 1:
        raise ValueError(f"--onnx-size {value!r} must be positive")
    return size


def webConfig(options) -> WebConfig | None:
    """
    The viewer's config from checked C{--web} options, or C{None} without
    C{--web} (the receiver's and the worker's).
    """
    if options["web"] is None:
        return None
    return WebConfig(
        options["web"],
        maxConnections=options["web-max-connections"],
        idleTimeout=options["web-idle-timeout"],
    )


def recordingConfig(options) -> RecordingConfig | None:
    """
    The recorder's config from checked C{--record-dir} options, or C{None}
    without C{--record-dir} (the receiver's and the worker's).
    """
    if options["record-dir"] is None:
        return None
    return RecordingConfig(
        options["record-dir"],
        segmentSeconds=options["segment-seconds"],
        format=options["record-format"],
    )


def detectorSpec(options):
    """
    The L{imageproto.features.inference.detectors.DetectorSpec} of
    C{--detect} and its companions (C{--onnx-*}, C{--confidence} already
    given its default by the tap), loaded once so that a missing or
    unreadable model is a usage error; C{None} without C{--detect}.
    """
    from imageproto.features.inference.detectors import (
        DetectorError,
        OnnxOptions,
        loadDetector,
        readClassNames,
    )

    name = options["detect"]
    if name is None:
        return None
    try:
        classes = ()
        if options["onnx-classes"]:
            classes = readClassNames(os.path.abspath(options["onnx-classes"]))
        onnx = OnnxOptions(
            size=_onnxSize(options["onnx-size"]),
            classes=classes,
            confidence=float(options["confidence"]),
            nms=float(options["nms"]),
            layout=options["onnx-layout"],
            backend=options.get("onnx-backend", "auto"),
        )
        if onnx.layout not in ("auto", "yolov5", "yolov8"):
            raise ValueError("--onnx-layout must be auto, yolov5 or yolov8")
        if onnx.backend not in ("auto", "onnxruntime", "cv2"):
            raise ValueError("--onnx-backend must be auto, onnxruntime or cv2")
        return loadDetector(name, onnx)
    except (DetectorError, ValueError) as e:
        raise usage.UsageError(str(e)) from None


def _inference(options) -> InferenceConfig | None:
    """
    The L{InferenceConfig} of C{--detect} and its companions (C{--reply}
    checked by the tap), or C{None} without C{--detect}.
    """
    detector = detectorSpec(options)
    if detector is None:
        return None
    return InferenceConfig(detector, workers=options["workers"], reply=options["reply"])


@frozen
class SenderConfig:
    """
    What C{twistd imageproto-sender} was asked to do.

    @ivar connect: a client endpoint description (C{"tcp:localhost:8080"}),
        the first receiver's when C{--connect} is repeated.
    @ivar name: the stream name.
    @ivar source: a L{VideoSpec}, L{CameraSpec}, L{ImagesSpec} or
        L{PatternSpec}.
    @ivar fps: frames per second, C{None} for the source's own rate, 0 for
        as fast as the pipeline goes.
    @ivar width: resize to this width (0: keep).
    @ivar height: resize to this height (0: keep).
    @ivar quality: JPEG quality, 1 to 100.
    @ivar count: stop after this many frames (0: no limit).
    @ivar window: frames unacknowledged at most; C{None} for the
        source's default (L{imageproto.wire.defaultWindow}).
    @ivar maxDelay: the longest wait between reconnection attempts, seconds.
    @ivar maxRetries: consecutive failed attempts before giving up, or
        C{None} to retry forever.
    @ivar results: absolute directory the RESULTs are written to, or
        C{None}.
    @ivar security: the token and TLS settings.
    @ivar limits: handshake and liveness settings.
    @ivar resume: a video or folder run again goes on where the receiver
        says (C{--no-resume} turns it off).
    @ivar retryFor: seconds to keep sending a frame the receiver cannot
        store for now.
    @ivar clockSkew: seconds the sender's clock is made to read off, from
        C{IMAGEPROTO_CLOCK_SKEW} (a testing aid; 0 normally).
    @ivar metadata: JSON text (an object or a string, checked) put on
        every frame, or C{None}.
    @ivar failover: the further receivers of a repeated C{--connect}, in
        order, tried in turn after C{connect} (see L{endpoints}).
    """

    connect: str = "tcp:localhost:8080"
    name: str = "imageproto"
    source: VideoSpec | CameraSpec | ImagesSpec | PatternSpec = PatternSpec()
    fps: float | None = None
    width: int = 0
    height: int = 0
    quality: int = 90
    count: int = 0
    window: int | None = None
    maxDelay: float = 5.0
    maxRetries: int | None = None
    results: str | None = None
    security: SenderSecurityConfig = SenderSecurityConfig()
    limits: SenderLimitsConfig = SenderLimitsConfig()
    resume: bool = True
    retryFor: float = 60.0
    clockSkew: float = 0.0
    metadata: str | None = None
    failover: tuple = ()

    @property
    def endpoints(self) -> tuple:
        """
        Every receiver's endpoint description, in the order they are tried.
        """
        return (self.connect,) + tuple(self.failover)

    @classmethod
    def fromOptions(cls, options) -> "SenderConfig":
        """
        Build from a parsed L{imageproto.tap.sender.Options}, reading the
        token file.

        @raise usage.UsageError: if the token file holds no usable token.
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
            results=options["results"],
            security=security.senderSecurity(options),
            limits=security.senderLimits(options),
            resume=not options["no-resume"],
            retryFor=options["retry-for"],
            clockSkew=options.get("clock-skew", 0.0),
            metadata=options["metadata"],
            failover=tuple(options.get("failover", ())),
        )


__all__ += [
    "SenderConfig",
    "VideoSpec",
    "CameraSpec",
    "ImagesSpec",
    "PatternSpec",
]
