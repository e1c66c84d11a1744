# -*- test-case-name: tests.test_wire -*-
"""
The wire format's messages: type numbers, capability and error codes, and one
frozen attrs class per message, each validating its fields where data
enters.  Serialisation is in L{imageproto.wire.codec}; C{PROTOCOL.md} is the
normative description.
"""

from __future__ import annotations

import math
from typing import Union

from attrs import field, fields, frozen
from attrs.validators import instance_of, optional

from imageproto.wire.metadata import checkMetadata

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "MSG_HELLO",
    "MSG_WELCOME",
    "MSG_FRAME",
    "MSG_ACK",
    "MSG_REJECT",
    "MSG_RESULT",
    "MSG_ERROR",
    "MSG_BYE",
    "MSG_PING",
    "MSG_PONG",
    "MSG_CHALLENGE",
    "MSG_AUTH",
    "CAP_LIVE",
    "CAP_RESULTS",
    "CAP_AUTH",
    "CAP_RESUME",
    "CAP_RETRY",
    "CAP_CLOCK",
    "CAP_METADATA",
    "SCAP_DETECT",
    "SCAP_ANNOTATED",
    "SCAP_HEARTBEAT",
    "SCAP_RESUME",
    "SCAP_CLOCK",
    "SCAP_METADATA",
    "REJECT_RETRY",
    "ERR_VERSION",
    "ERR_BAD_NAME",
    "ERR_STREAM_LIMIT",
    "ERR_PROTOCOL",
    "ERR_TOO_LARGE",
    "ERR_AUTH",
    "ERR_TIMEOUT",
    "ERR_SHUTDOWN",
    "ERR_REPLACED",
    "ERR_BUSY",
    "NONCE_BYTES",
    "DIGEST_BYTES",
    "Hello",
    "Welcome",
    "Frame",
    "Ack",
    "Reject",
    "Result",
    "Error",
    "Bye",
    "Ping",
    "Pong",
    "Challenge",
    "Auth",
    "Message",
]

PROTOCOL_VERSION = 1

MSG_HELLO = 0x01
MSG_WELCOME = 0x02
MSG_FRAME = 0x03
MSG_ACK = 0x04
MSG_REJECT = 0x05
MSG_RESULT = 0x06
MSG_ERROR = 0x07
MSG_BYE = 0x08
MSG_PING = 0x09
MSG_PONG = 0x0A
MSG_CHALLENGE = 0x0B
MSG_AUTH = 0x0C

# Sender capabilities (HELLO).
CAP_LIVE = 0x1  # a live source: the server may skip stale frames
CAP_RESULTS = 0x2  # the sender understands RESULT messages
CAP_AUTH = 0x4  # the sender holds a token and can answer a CHALLENGE
CAP_RESUME = 0x8  # a finite source whose session names its content: resumable
CAP_RETRY = 0x10  # the sender understands REJECT's flags (retry later)
CAP_CLOCK = 0x40  # the sender stamps its PONGs with its clock's times
CAP_METADATA = 0x20  # the sender may put metadata on its FRAMEs

# Server capabilities (WELCOME).
SCAP_DETECT = 0x1  # a detector runs; RESULT messages follow ACKs
SCAP_ANNOTATED = 0x2  # RESULT messages carry the marked-up JPEG
SCAP_HEARTBEAT = 0x4  # the server sends PING and expects PONG
SCAP_RESUME = 0x8  # WELCOME carries the seq to resume from
SCAP_CLOCK = 0x20  # timed PONGs both ways (only in answer to CAP_CLOCK)
SCAP_METADATA = 0x10  # the server takes metadata on FRAMEs

# REJECT flags.
REJECT_RETRY = 0x1  # the condition is temporary: send the frame again later

# ERROR codes.
ERR_VERSION = 1
ERR_BAD_NAME = 2
ERR_STREAM_LIMIT = 3
ERR_PROTOCOL = 4
ERR_TOO_LARGE = 5
ERR_AUTH = 6
ERR_TIMEOUT = 7
ERR_SHUTDOWN = 8
ERR_REPLACED = 9
ERR_BUSY = 10

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
NONCE_BYTES = 32

# The largest message a receiver reads unless configured otherwise (WELCOME
# announces the real limit).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DIGEST_BYTES = 32


def _unsigned(limit: int):
    """
    A validator for an integer in C{[0, limit]}: one call where attrs'
    C{instance_of}, C{ge} and C{le} make three (every FRAME and ACK pays it).
    """

    def check(instance, attribute, value):
        if not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an int, not {value!r}")
        if not 0 <= value <= limit:
            raise ValueError(f"{attribute.name} must be in [0, {limit}], not {value}")

    return check


_uint16 = _unsigned(_U16)
_uint32 = _unsigned(_U32)
_uint64 = _unsigned(_U64)


def _short(limit: int):
    def check(instance, attribute, value):
        if not isinstance(value, str):
            raise TypeError(f"{attribute.name} must be str")
        if len(value.encode("utf-8")) > limit:
            raise ValueError(f"{attribute.name} is longer than {limit} bytes")

    return check


def _finite(instance, attribute, value):
    # NaN and infinities would poison every latency and rate computed from
    # a time, and JSON cannot carry them.
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, not {value!r}")


def _optionalFloat(value):
    return None if value is None else float(value)
def _metadata(instance, attribute, value):
    if value is not None:
        checkMetadata(value)


def _exact(size: int):
    def check(instance, attribute, value):
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"{attribute.name} must be {size} bytes")

    return check


def _payload(instance, attribute, value):
    # bytes, or a flat byte view of another buffer (a numpy array from
    # cv2.imencode, a bytearray): the sender passes those as views so that
    # nothing copies them before the one copy that frames them.
    if value.__class__ is bytes:
        return
    if not isinstance(value, memoryview) or value.ndim != 1 or value.format != "B":
        raise TypeError(
            f"{attribute.name} must be bytes or a 1-D memoryview of bytes, "
            f"not {type(value).__name__}"
        )


@frozen
class Hello:
    """
    The sender's first message.

    @ivar name: the stream name, at most 255 bytes of UTF-8 (the server
        applies its own, stricter, naming rule).
    @ivar capabilities: an OR of the C{CAP_*} flags.
    @ivar session: a random number the sender picks once per run and repeats
        on every reconnect, so the server can tell a resent frame (same
        session) from a restarted sender whose numbering begins again.
    """

    name: str = field(validator=_short(0xFF))
    capabilities: int = field(default=0, validator=_uint32)
    session: int = field(default=0, validator=_uint64)


@frozen
class Welcome:
    """
    The server's acceptance of a HELLO.

    @ivar maxMessageBytes: the largest message the server will read.
    @ivar heartbeat: seconds between the server's PINGs, 0 for none.
    @ivar resume: with C{SCAP_RESUME} in C{capabilities}, the server holds
        every frame of this session numbered below it: the sender goes on
        from there.  C{None} without C{SCAP_RESUME}.
    """

    capabilities: int = field(default=0, validator=_uint32)
    maxMessageBytes: int = field(default=16 * 1024 * 1024, validator=_uint32)
    heartbeat: int = field(default=0, validator=_uint16)
    resume: int | None = field(default=None)

    def __attrs_post_init__(self) -> None:
        if (self.resume is None) != (not self.capabilities & SCAP_RESUME):
            raise ValueError("resume goes with SCAP_RESUME, and only with it")
        if self.resume is not None:
            _uint64(self, fields(Welcome).resume, self.resume)


@frozen
class Frame:
    """
    One encoded frame.

    @ivar seq: the sender's sequence number; frames it drops consume none.
    @ivar jpeg: the JPEG bytes, passed through untouched: C{bytes}, or (on
        the sending side) a flat C{memoryview} of a buffer holding them.
    @ivar captureTime: when the frame was captured (sender's clock).
    @ivar sendTime: when it was handed to the transport (sender's clock).
    @ivar dropped: frames the sender has dropped on this stream so far.
    @ivar metadata: C{None}, or the application's payload as JSON text (an
        object or a string, at most C{MAX_METADATA_BYTES} bytes of UTF-8;
        see L{imageproto.wire.metadata}, whose C{encodeMetadata} makes it
        from a value).  Sent only to a server that announced
        C{SCAP_METADATA}.
    """

    seq: int = field(validator=_uint64)
    jpeg: bytes = field(repr=False, validator=_payload)
    captureTime: float = field(default=0.0, converter=float, validator=_finite)
    sendTime: float = field(default=0.0, converter=float, validator=_finite)
    dropped: int = field(default=0, validator=_uint32)
    metadata: str | None = field(default=None, validator=_metadata)


@frozen
class Ack:
    """
    The server has accepted (and, with C{--save-dir}, stored) frame C{seq}.
    """

    seq: int = field(validator=_uint64)


@frozen
class Reject:
    """
    The server refused frame C{seq} (for example: not a JPEG, or it could
    not be stored).  The connection stays up.

    @ivar flags: C{None} (the field is absent, as for senders without
        C{CAP_RETRY}), or C{REJECT_*} bits: with C{REJECT_RETRY} the
        condition is temporary (a full disk) and the sender should send the
        frame again later; without it the frame is settled as rejected.
    """

    seq: int = field(validator=_uint64)
    reason: str = field(default="", validator=_short(_U16))
    flags: int | None = field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.flags is not None:
            _unsigned(0xFF)(self, fields(Reject).flags, self.flags)

    @property
    def retry(self) -> bool:
        return bool(self.flags and self.flags & REJECT_RETRY)


@frozen
class Result:
    """
    A detector's answer to frame C{seq}.

    @ivar detections: a list of C{{"label", "confidence", "box": [x, y, w, h]}}
        dicts (any JSON array travels; L{decodeMessage} checks only that it is
        a JSON array).
    @ivar processingMicros: how long the detector took.
    @ivar jpeg: the marked-up frame, or C{b""} when not asked for.
    """

    seq: int = field(validator=_uint64)
    detections: list = field(factory=list, validator=instance_of(list))
    processingMicros: int = field(default=0, validator=_uint32)
    jpeg: bytes = field(default=b"", repr=False, validator=instance_of(bytes))


@frozen
class Error:
    """
    A fatal error: the peer that sends it closes the connection next.
    """

    code: int = field(validator=_uint16)
    reason: str = field(default="", validator=_short(_U16))


@frozen
class Bye:
    """
    An orderly goodbye: the sender has nothing more to send.
    """

    reason: str = field(default="", validator=_short(_U16))


@frozen
class Ping:
    token: int = field(validator=_uint64)


@frozen
class Pong:
    """
    The answer to a L{Ping}, repeating its token.

    @ivar receiveTime: on a connection where both peers announced the clock
        capability (C{CAP_CLOCK}, C{SCAP_CLOCK}), when the PING arrived, on
        the answering peer's clock; otherwise C{None} (the field is absent).
    @ivar sendTime: with C{receiveTime}, when this PONG was sent, same
        clock.  The two are present together or not at all.
    """

    token: int = field(validator=_uint64)
    receiveTime: float | None = field(
        default=None, converter=_optionalFloat, validator=optional(_finite)
    )
    sendTime: float | None = field(
        default=None, converter=_optionalFloat, validator=optional(_finite)
    )

    def __attrs_post_init__(self) -> None:
        if (self.receiveTime is None) != (self.sendTime is None):
            raise ValueError("a PONG carries both times or neither")

    @property
    def timed(self) -> bool:
        return self.receiveTime is not None


@frozen
class Challenge:
    """
    The server's nonce; the sender must answer with L{Auth}.
    """

    nonce: bytes = field(repr=False, validator=_exact(NONCE_BYTES))


@frozen
class Auth:
    """
    The sender's proof that it holds a token: a nonce of its own and
    HMAC-SHA256 over both nonces and the stream name (see PROTOCOL.md).
    """

    nonce: bytes = field(repr=False, validator=_exact(NONCE_BYTES))
    digest: bytes = field(repr=False, validator=_exact(DIGEST_BYTES))


Message = Union[
    Hello, Welcome, Frame, Ack, Reject, Result, Error, Bye, Ping, Pong, Challenge, Auth
]
