# -*- test-case-name: tests.test_compat -*-
"""
The fields of the compatibility protocols (L{imageproto.protocol.compat}),
parsed by plain functions: the base64 protocol's 64-byte length and
timestamp fields, the stream name given to a peer that does not name
itself, and turning any image into JPEG.  PROTOCOL.md, "Compatibility
protocols", describes the byte layout.
"""

from __future__ import annotations

import calendar
import math
from datetime import datetime

from imageproto import wire
from imageproto.wire import toStreamName

__all__ = [
    "FIELD_BYTES",
    "TIMESTAMP_FORMAT",
    "CompatError",
    "streamNameFor",
    "parseLengthField",
    "parseTimestampField",
    "toJpeg",
]

FIELD_BYTES = 64
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class CompatError(ValueError):
    """
    Input that breaks a compatibility protocol's framing.
    """


def streamNameFor(prefix: str, host: str, port: int | None = None) -> str:
    """
    A stream name for a peer that does not name itself, obeying the naming
    rule (1-64 characters of C{[A-Za-z0-9._-]}): C{prefix-host[-port]}
    with any other character (C{:} of IPv6) turned into C{_}.
    """
    name = f"{prefix}-{host}" + (f"-{port}" if port is not None else "")
    return toStreamName(name, fallback=prefix)


def parseLengthField(field: bytes, limit: int) -> int:
    """
    A 64-byte space-padded ASCII decimal length.

    @raise CompatError: if it is not a positive decimal number of at most
        C{limit}.
    """
    text = field.strip(b" \0\r\n\t")
    if not text.isdigit():
        raise CompatError(f"length field {bytes(field[:16])!r}... is not a decimal number")
    length = int(text)
    if length == 0 or length > limit:
        raise CompatError(f"length {length} is outside 1..{limit}")
    return length


def parseTimestampField(field: bytes) -> float:
    """
    A 64-byte space-padded ASCII C{%Y-%m-%d %H:%M:%S.%f} time in UTC, as
    seconds since the epoch.

    @raise CompatError: if it does not parse.
    """
    try:
        text = field.strip(b" \0\r\n\t").decode("ascii")
        when = datetime.strptime(text, TIMESTAMP_FORMAT)
    except (UnicodeDecodeError, ValueError):
        raise CompatError(f"timestamp {bytes(field).strip()[:40]!r} is not {TIMESTAMP_FORMAT}") from None
    seconds = calendar.timegm(when.timetuple()) + when.microsecond / 1e6
    if not math.isfinite(seconds):
        raise CompatError("timestamp out of range")
    return seconds


def toJpeg(data: bytes) -> bytes:
    """
    The image as JPEG: JPEG passes through, other formats OpenCV reads are
    re-encoded.  Runs in a worker thread.

    @raise CompatError: if OpenCV cannot read the image.
    """
    if wire.isJpeg(data):
        return data
    from imageproto.common.jpeg import decodeJpeg, encodeJpeg

    try:
        return encodeJpeg(decodeJpeg(data))
    except ValueError as e:
        raise CompatError(str(e)) from None
