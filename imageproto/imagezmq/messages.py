# -*- test-case-name: tests.test_imagezmq -*-
"""
The drop-in's small rules: how imagezmq's C{msg} travels as frame metadata and
back, stream names from it, and the reply and JPEG conversions.
"""

from __future__ import annotations

import os
import re
import socket

from imageproto import wire


# imagezmq's REQ socket blocks until the hub answers, however long.
_FOREVER = 7 * 24 * 3600.0

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def metadataFor(msg) -> dict:
    """
    The frame metadata carrying imagezmq's C{msg}.
    """
    return {"msg": msg}


def msgFrom(metadata, stream: str):
    """
    C{msg} back from a frame's metadata, or the stream name when the frame
    has none.
    """
    if isinstance(metadata, dict) and "msg" in metadata:
        return metadata["msg"]
    return stream


def _toJpeg(jpg_buffer) -> bytes:
    # cv2.imencode gives a 1-D uint8 array; imagezmq sends any buffer.
    if hasattr(jpg_buffer, "tobytes"):
        return jpg_buffer.tobytes()
    return bytes(jpg_buffer)


def _replyFrom(reply) -> bytes:
    for detection in reply.detections:
        if isinstance(detection, dict) and "reply" in detection:
            return detection["reply"].encode("utf-8", "surrogateescape")
    return b"OK"


def _streamName(msg) -> str | None:
    if isinstance(msg, str) and wire.isStreamName(msg):
        return msg
    return None


def _fallbackName() -> str:
    host = _NAME_CHARS.sub("-", socket.gethostname()).strip("-.") or "host"
    return f"imagezmq-{host}"[:54] + f"-{os.getpid()}"
