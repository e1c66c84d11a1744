# -*- test-case-name: tests.test_wire -*-
"""
The imageproto wire format: message classes and pure encode/decode.

Bytes in, objects out; no Twisted and no OpenCV here.  C{PROTOCOL.md} is the
normative description; this docstring is the summary.

Every message travels inside a 4-byte big-endian length prefix (Twisted's
C{Int32StringReceiver}).  Inside, every message starts with two bytes::

    u8 version   (PROTOCOL_VERSION, currently 1)
    u8 type      (one of the MSG_* constants)

followed by the body for that type.  All integers are big-endian and unsigned;
C{f64} is an IEEE-754 double, big-endian; strings are UTF-8 preceded by their
length in bytes.

  - HELLO      0x01  u32 capabilities, u64 session, u8 name length, name
  - WELCOME    0x02  u32 capabilities, u32 max message bytes, u16 heartbeat s
  - FRAME      0x03  u64 seq, u32 jpeg length, jpeg,
                     trailer: f64 capture time, f64 send time, u32 dropped,
                     then, only when the frame has metadata (and the server
                     announced SCAP_METADATA): u16 metadata length, metadata
                     (JSON text, see imageproto.wire.metadata)
  - ACK        0x04  u64 seq
  - REJECT     0x05  u64 seq, u16 reason length, reason
  - RESULT     0x06  u64 seq, u32 processing microseconds,
                     u32 json length, json, u32 jpeg length, jpeg
  - ERROR      0x07  u16 code, u16 reason length, reason
  - BYE        0x08  u16 reason length, reason
  - PING       0x09  u64 token
  - PONG       0x0A  u64 token, and with the clock capability (both
                     peers) f64 receive time, f64 send time
  - CHALLENGE  0x0B  32-byte server nonce
  - AUTH       0x0C  32-byte client nonce, 32-byte HMAC-SHA256 digest

Times are seconds since the Unix epoch on the clock of the peer that wrote
them.  A message whose length does not match its layout exactly, whose
version or type is unknown, or whose strings are not UTF-8 makes
L{decodeMessage} raise L{WireError}.
"""

from __future__ import annotations

import json
import math
import struct

from imageproto.wire.errors import VersionError, WireError
from imageproto.wire.metadata import finiteFloat, nonFinite
from imageproto.wire.messages import *  # noqa: F401,F403
from imageproto.wire.messages import (
    _U32,
    Message,
)

__all__ = [
    "encodeMessage",
    "encodeFramed",
    "LENGTH_BYTES",
    "decodeLength",
    "FRAME_OVERHEAD",
    "decodeMessage",
    "encodeAcks",
    "framedFrameParts",
    "frameParts",
    "decodeFrame",
    "ackSeq",
    "asPayload",
    "isJpeg",
]

_HEADER = struct.Struct("!BB")
_FRAME_HEAD = struct.Struct("!QI")
_LENGTH = struct.Struct("!I")
_FRAMED_START = struct.Struct("!IBBQI")
_FRAME_TRAILER = struct.Struct("!ddI")
_FRAMED_ACK = struct.Struct("!IBBQ")
_ACK_SIZE = _FRAMED_ACK.size - 4
_SEQ = struct.Struct("!Q")
_METADATA_LENGTH = struct.Struct("!H")
# The bytes of a FRAME besides its JPEG: header, seq, length and trailer.
FRAME_OVERHEAD = _HEADER.size + _FRAME_HEAD.size + _FRAME_TRAILER.size


LENGTH_BYTES = _LENGTH.size


def decodeLength(prefix: bytes) -> int:
    """
    The message length a 4-byte prefix announces (the inverse of
    L{encodeFramed}'s first four bytes), for readers that do their own
    buffering.

    @raise WireError: if C{prefix} is not L{LENGTH_BYTES} long.
    """
    if len(prefix) != LENGTH_BYTES:
        raise WireError(f"a length prefix is {LENGTH_BYTES} bytes, not {len(prefix)}")
    return _LENGTH.unpack(prefix)[0]


def _string(text: str, width: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!" + width, len(raw)) + raw


def encodeFramed(message: Message) -> bytes:
    """
    Encode C{message} behind its 4-byte length prefix: the bytes on the
    wire.  For a FRAME this copies the JPEG once, where prefixing
    L{encodeMessage}'s result would copy it twice.

    @raise WireError: if the message is longer than a prefix can say.
    """
    if isinstance(message, Frame):
        return b"".join(framedFrameParts(message))
    body = encodeMessage(message)
    if len(body) > _U32:
        raise WireError(f"a {len(body)}-byte message does not fit a length prefix")
    return _LENGTH.pack(len(body)) + body


def encodeAcks(seqs) -> bytes:
    """
    The framed ACKs of C{seqs}, in order, as one string: what
    C{encodeFramed(Ack(seq))} gives for each, joined, without building the
    messages (a receiver acknowledging frames that arrived together writes
    them at once).
    """
    pack = _FRAMED_ACK.pack
    return b"".join([pack(_ACK_SIZE, PROTOCOL_VERSION, MSG_ACK, seq) for seq in seqs])


def ackSeq(data, offset: int = 0, size: int | None = None) -> int | None:
    """
    The seq of C{data} if it is exactly a well-formed ACK (the bytes inside
    its length prefix), else C{None}: both senders' per-frame path, which
    skips L{decodeMessage} and the L{Ack} object for the message they get
    most.

    @param offset: where the message starts in C{data}, for a reader that
        parses a buffer in place.
    @param size: the message's length (from its prefix); the rest of
        C{data} when C{None}.
    """
    if size is None:
        size = len(data) - offset
    if size == _ACK_SIZE and data[offset + 1] == MSG_ACK and data[offset] == PROTOCOL_VERSION:
        return _SEQ.unpack_from(data, offset + 2)[0]
    return None


def asPayload(data) -> bytes | memoryview:
    """
    C{data} as a L{Frame}'s C{jpeg} without copying it: C{bytes} as they
    are, any other buffer (a C{bytearray}, the numpy array C{cv2.imencode}
    returns, a C{memoryview}) as a flat, read-only byte view of it.

    @raise TypeError: if C{data} is not a buffer.
    @raise ValueError: if it is not C-contiguous.
    """
    if data.__class__ is bytes:
        return data
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view.toreadonly()


def framedFrameParts(frame: Frame) -> list:
    """
    L{encodeFramed} of a FRAME as the buffers it joins, in order: the
    length prefix and head, the JPEG itself (not copied), the trailer and,
    with metadata, its length and bytes.  For a writer that gathers them
    into one C{sendmsg} rather than copying the JPEG into one string.

    @raise WireError: if the message is longer than a prefix can say.
    """
    return frameParts(
        frame.seq, frame.jpeg, frame.captureTime, frame.sendTime, frame.dropped, frame.metadata
    )


def frameParts(seq, jpeg, captureTime, sendTime, dropped, metadata=None) -> list:
    """
    L{framedFrameParts} of the FRAME these fields make, without building
    the L{Frame}: the sender's per-frame path, whose fields it checked when
    the frame was offered (a L{Frame}'s validators cost as much as the
    rest of the encoding; bench/README.md, "round 3").  The caller
    vouches for the fields: C{seq} a u64, C{jpeg} bytes or a flat byte
    view, finite times, C{dropped} a u32, C{metadata} C{None} or checked
    metadata text (or that text's UTF-8 bytes).

    @raise WireError: if the message is longer than a prefix can say.
    """
    size = FRAME_OVERHEAD + len(jpeg)
    if metadata is not None:
        raw = metadata.encode("utf-8") if metadata.__class__ is str else metadata
        size += _METADATA_LENGTH.size + len(raw)
    if size > _U32:
        raise WireError(f"a {size}-byte message does not fit a length prefix")
    parts = [
        _FRAMED_START.pack(size, PROTOCOL_VERSION, MSG_FRAME, seq, len(jpeg)),
        jpeg,
        _FRAME_TRAILER.pack(captureTime, sendTime, dropped),
    ]
    if metadata is not None:
        parts += [_METADATA_LENGTH.pack(len(raw)), raw]
    return parts


def encodeMessage(message: Message) -> bytes:
    """
    Encode C{message} as the bytes that go inside the length prefix.
    """
    head = lambda kind: _HEADER.pack(PROTOCOL_VERSION, kind)  # noqa: E731
    if isinstance(message, Frame):
        return encodeFramed(message)[_LENGTH.size :]
    if isinstance(message, Ack):
        return head(MSG_ACK) + struct.pack("!Q", message.seq)
    if isinstance(message, Hello):
        return (
            head(MSG_HELLO)
            + struct.pack("!IQ", message.capabilities, message.session)
            + _string(message.name, "B")
        )
    if isinstance(message, Welcome):
        body = head(MSG_WELCOME) + struct.pack(
            "!IIH", message.capabilities, message.maxMessageBytes, message.heartbeat
        )
        if message.resume is not None:
            body += struct.pack("!Q", message.resume)
        return body
    if isinstance(message, Reject):
        body = head(MSG_REJECT) + struct.pack("!Q", message.seq) + _string(message.reason, "H")
        if message.flags is not None:
            body += struct.pack("!B", message.flags)
        return body
    if isinstance(message, Result):
        try:
            body = json.dumps(
                message.detections, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:
            raise WireError(f"detections are not JSON-serialisable: {e}") from None
        if len(body) > _U32:
            raise WireError("detections too large")
        return b"".join(
            [
                head(MSG_RESULT),
                struct.pack("!QII", message.seq, message.processingMicros, len(body)),
                body,
                struct.pack("!I", len(message.jpeg)),
                message.jpeg,
            ]
        )
    if isinstance(message, Error):
        return (
            head(MSG_ERROR)
            + struct.pack("!H", message.code)
            + _string(message.reason, "H")
        )
    if isinstance(message, Bye):
        return head(MSG_BYE) + _string(message.reason, "H")
    if isinstance(message, Ping):
        return head(MSG_PING) + struct.pack("!Q", message.token)
    if isinstance(message, Pong):
        if message.receiveTime is None:
            return head(MSG_PONG) + struct.pack("!Q", message.token)
        return head(MSG_PONG) + struct.pack(
            "!Qdd", message.token, message.receiveTime, message.sendTime
        )
    if isinstance(message, Challenge):
        return head(MSG_CHALLENGE) + message.nonce
    if isinstance(message, Auth):
        return head(MSG_AUTH) + message.nonce + message.digest
    raise WireError(f"not a message: {type(message).__name__}")


_structs: dict[str, struct.Struct] = {}


class _Reader:
    """
    Consume a message body field by field, raising L{WireError} on overrun.
    """

    def __init__(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        # A view, so that each field is copied once, straight out of
        # C{data}, whatever C{data} is (a bytearray slice from the framing,
        # for one): a 60 KB JPEG is otherwise copied twice per frame.
        self._data = memoryview(data)
        self._offset = offset

    def _advance(self, size: int) -> int:
        start = self._offset
        end = start + size
        if end > len(self._data):
            raise WireError(
                f"truncated message: wanted {size} bytes at offset "
                f"{start}, have {len(self._data) - start}"
            )
        self._offset = end
        return start

    def take(self, size: int) -> bytes:
        start = self._advance(size)
        return bytes(self._data[start : self._offset])

    def unpack(self, fmt: str):
        s = _structs.get(fmt) or _structs.setdefault(fmt, struct.Struct("!" + fmt))
        return s.unpack_from(self._data, self._advance(s.size))

    def release(self) -> None:
        """
        Let go of the data, so that a caller's C{bytearray} may be resized
        even while an exception raised here is still referenced.
        """
        self._data.release()

    def text(self, width: str) -> str:
        (size,) = self.unpack(width)
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError as e:
            raise WireError(f"string is not UTF-8: {e}") from None

    def remaining(self) -> int:
        return len(self._data) - self._offset

    def finish(self) -> None:
        extra = len(self._data) - self._offset
        if extra:
            raise WireError(f"{extra} unexpected trailing bytes")


def _decodeHello(r: _Reader) -> Hello:
    capabilities, session = r.unpack("IQ")
    return Hello(r.text("B"), capabilities, session)


def _decodeWelcome(r: _Reader) -> Welcome:
    capabilities, maxMessageBytes, heartbeat = r.unpack("IIH")
    resume = r.unpack("Q")[0] if capabilities & SCAP_RESUME else None
    return Welcome(capabilities, maxMessageBytes, heartbeat, resume)


def _decodeReject(r: _Reader) -> Reject:
    seq = r.unpack("Q")[0]
    reason = r.text("H")
    # The flags byte is there only for senders that announced CAP_RETRY.
    flags = r.unpack("B")[0] if r.remaining() else None
    return Reject(seq, reason, flags)


def _decodePong(r: _Reader) -> Pong:
    (token,) = r.unpack("Q")
    if not r.remaining():
        return Pong(token)
    # The times are there only between peers that announced the clock
    # capability; anything but exactly two f64s is malformed.
    receiveTime, sendTime = r.unpack("dd")
    if not (math.isfinite(receiveTime) and math.isfinite(sendTime)):
        raise WireError("PONG times must be finite")
    return Pong(token, receiveTime, sendTime)


def _decodeFrame(r: _Reader) -> Frame:
    seq, size = r.unpack("QI")
    jpeg = r.take(size)
    captureTime, sendTime, dropped = r.unpack("ddI")
    if not (math.isfinite(captureTime) and math.isfinite(sendTime)):
        raise WireError("FRAME times must be finite")
    # Metadata follows the trailer; a frame without it ends here.  (The
    # reader's fields, not remaining(): this is every frame's path.)
    if r._offset != len(r._data):
        text = r.text("H")
        try:
            return Frame(seq, jpeg, captureTime, sendTime, dropped, text)
        except ValueError as e:
            raise WireError(f"FRAME {e}") from None
    return Frame(seq, jpeg, captureTime, sendTime, dropped)


_FRAME_START = struct.Struct("!BBQI")


def decodeFrame(data) -> Frame | None:
    """
    L{decodeMessage} of C{data} if it is a FRAME of this version without
    metadata, else C{None} (decode it with L{decodeMessage}, which also
    says what is wrong with it): the receiver's per-frame path, without
    the general decoder's reader and dispatch.

    @param data: the bytes inside the length prefix (any buffer).
    @raise WireError: if it is such a FRAME but malformed.
    """
    size = len(data)
    if size < FRAME_OVERHEAD or data[1] != MSG_FRAME or data[0] != PROTOCOL_VERSION:
        return None
    _, _, seq, length = _FRAME_START.unpack_from(data)
    end = _FRAME_START.size + length
    if end + _FRAME_TRAILER.size != size:
        # Metadata, or a length that does not add up: the full decoder.
        return None
    captureTime, sendTime, dropped = _FRAME_TRAILER.unpack_from(data, end)
    if not (math.isfinite(captureTime) and math.isfinite(sendTime)):
        raise WireError("FRAME times must be finite")
    with memoryview(data) as view:
        jpeg = bytes(view[_FRAME_START.size : end])
    return Frame(seq, jpeg, captureTime, sendTime, dropped)


def _decodeResult(r: _Reader) -> Result:
    seq, micros, size = r.unpack("QII")
    try:
        detections = json.loads(
            r.take(size).decode("utf-8"),
            parse_constant=nonFinite,
            parse_float=finiteFloat,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"RESULT detections are not JSON: {e}") from None
    if not isinstance(detections, list):
        raise WireError("RESULT detections are not a JSON array")
    (jpegSize,) = r.unpack("I")
    return Result(seq, detections, micros, r.take(jpegSize))


_DECODERS = {
    MSG_HELLO: _decodeHello,
    MSG_WELCOME: _decodeWelcome,
    MSG_FRAME: _decodeFrame,
    MSG_ACK: lambda r: Ack(*r.unpack("Q")),
    MSG_REJECT: _decodeReject,
    MSG_RESULT: _decodeResult,
    MSG_ERROR: lambda r: Error(r.unpack("H")[0], r.text("H")),
    MSG_BYE: lambda r: Bye(r.text("H")),
    MSG_PING: lambda r: Ping(*r.unpack("Q")),
    MSG_PONG: _decodePong,
    MSG_CHALLENGE: lambda r: Challenge(r.take(NONCE_BYTES)),
    MSG_AUTH: lambda r: Auth(r.take(NONCE_BYTES), r.take(DIGEST_BYTES)),
}


def decodeMessage(data: bytes) -> Message:
    """
    Decode the bytes inside one length prefix.

    @raise WireError: if C{data} is not exactly one valid message.
    """
    if len(data) < _HEADER.size:
        raise WireError(f"message of {len(data)} bytes is shorter than its header")
    version, kind = _HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise VersionError(version)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise WireError(f"unknown message type 0x{kind:02x}")
    reader = _Reader(data, _HEADER.size)
    try:
        message = decoder(reader)
        reader.finish()
    finally:
        reader.release()
    return message


def isJpeg(data: bytes) -> bool:
    """
    A cheap plausibility check: JPEG data starts with the SOI marker and the
    first byte of a segment marker (C{FF D8 FF}) and, allowing for trailing
    padding some encoders add, has the EOI marker (C{FF D9}) within its last
    32 bytes, after those first three.
    """
    if data[:3] != b"\xff\xd8\xff":
        return False
    return data.find(b"\xff\xd9", max(3, len(data) - 32)) != -1
