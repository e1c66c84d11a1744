# -*- test-case-name: tests.test_client -*-
"""
What goes into the blocking client and what comes back: L{encodeFrame}
turns an image into JPEG bytes, L{framedParts} lays out a FRAME's bytes
for the socket, and a L{Reply} is the server's answer to one frame.
"""

from __future__ import annotations

from attrs import field, frozen

from imageproto import wire

__all__ = ["Reply", "encodeFrame", "framedParts"]



@frozen
class Reply:
    """
    The server's answer to one frame.

    @ivar seq: the frame's sequence number.
    @ivar detections: C{{"label", "confidence", "box": [x, y, w, h]}} dicts,
        C{[]} when the server does not detect.
    @ivar detected: C{True} for a RESULT, C{False} for a bare ACK.
    @ivar processingMicros: the detector's time.
    @ivar jpeg: the marked-up frame (C{--reply annotated}), else C{b""}.
    @ivar roundTrip: seconds from sending to this answer, on this clock.
    """

    seq: int
    detections: list = field(factory=list)
    detected: bool = False
    processingMicros: int = 0
    jpeg: bytes = field(default=b"", repr=False)
    roundTrip: float = 0.0

    def image(self):
        """
        The marked-up frame decoded to a BGR numpy array, or C{None}.
        """
        if not self.jpeg:
            return None
        from imageproto.common.jpeg import decodeJpeg

        return decodeJpeg(self.jpeg)


def encodeFrame(image, quality: int = 90) -> bytes:
    """
    JPEG bytes pass through (checked); a numpy array is JPEG-encoded.

    @raise ValueError: for bytes that are not a JPEG.
    @raise TypeError: for anything else.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not wire.isJpeg(data):
            raise ValueError("bytes given to send() must be a JPEG")
        return data
    if hasattr(image, "shape"):
        from imageproto.common.jpeg import encodeJpeg

        return encodeJpeg(image, quality)
    raise TypeError(f"cannot send a {type(image).__name__}: give a numpy image or JPEG bytes")


def framedParts(
    seq: int, jpeg: bytes, captureTime: float, sendTime: float, metadata: bytes | None = None
) -> list:
    """
    The bytes of C{wire.encodeFramed(wire.Frame(seq, jpeg, captureTime,
    sendTime, metadata=...))} as the buffers a C{sendmsg} gathers
    (L{wire.frameParts}): the length prefix and head, the JPEG itself (not
    copied), the trailer, and with C{metadata} its length and bytes.  The
    values are not checked here: they are the client's own, or were checked
    by a C{wire.Frame} once (L{imageproto.client.blocking.Client}).

    @param metadata: the metadata's JSON text as UTF-8, or C{None}.
    @raise wire.WireError: if the message is longer than a length prefix
        can say.
    """
    return wire.frameParts(seq, jpeg, captureTime, sendTime, 0, metadata)
