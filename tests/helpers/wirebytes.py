"""
Bytes as they travel: JPEG stand-ins, framed messages, decoding what a
protocol wrote, and the worked examples in PROTOCOL.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from imageproto import wire

__all__ = [
    "FAKE_JPEG",
    "TINY_JPEG",
    "framed",
    "lengthPrefixed",
    "messages",
    "protocolBlocks",
    "takeMessages",
    "wireBytes",
]

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "PROTOCOL.md"

# The smallest bytes that pass wire.isJpeg: SOI, a marker byte, EOI.
FAKE_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 8 + b"\xff\xd9"

# The smallest payload that passes the JPEG check: SOI, an empty APP0, EOI.
TINY_JPEG = bytes.fromhex("ffd8ffe00002ffd9")


def framed(message: wire.Message) -> bytes:
    """
    C{message} as it travels: encoded, behind its 4-byte length prefix.
    """
    return wire.encodeFramed(message)


def lengthPrefixed(data: bytes) -> bytes:
    """
    C{data} (any bytes, valid message or not) behind a 4-byte big-endian
    length prefix.
    """
    return len(data).to_bytes(4, "big") + data


def messages(source) -> list:
    """
    Decode every length-prefixed message in C{source}: bytes, or a
    StringTransport (what was written to it, left in place).
    """
    data = source.value() if hasattr(source, "value") else source
    out = []
    while data:
        size = int.from_bytes(data[:4], "big")
        out.append(wire.decodeMessage(data[4 : 4 + size]))
        data = data[4 + size :]
    return out


def takeMessages(transport) -> list:
    """
    Decode and clear everything written to C{transport}, so the next call
    sees only what is written after this one.
    """
    out = messages(transport)
    transport.clear()
    return out


def protocolBlocks(kind: str) -> list[str]:
    """
    The bodies of the fenced code blocks of info string C{kind} in
    PROTOCOL.md, in document order.
    """
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    return re.findall(r"^```" + re.escape(kind) + r"\n(.*?)^```$", text, re.M | re.S)


def wireBytes(hexText: str) -> bytes:
    """
    Bytes from PROTOCOL.md's spaced hex.
    """
    return bytes.fromhex("".join(hexText.split()))
