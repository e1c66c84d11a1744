# -*- test-case-name: tests.test_wire -*-
"""
Errors of the wire layer: malformed bytes (L{WireError}), another protocol
version (L{VersionError}), and a peer refused with an ERROR code
(L{Refused}), which any layer may raise and the protocols turn into an
ERROR message.
"""

from __future__ import annotations

from imageproto.wire.messages import PROTOCOL_VERSION

__all__ = ["WireError", "VersionError", "Refused"]


class WireError(ValueError):
    """
    Raised by L{decodeMessage} (and by encoding) for bytes or values that do
    not form a valid message.
    """


class VersionError(WireError):
    """
    The message carries a protocol version this end does not speak.

    @ivar version: the version byte received.
    """

    def __init__(self, version: int) -> None:
        super().__init__(
            f"unsupported protocol version {version} (this end speaks "
            f"{PROTOCOL_VERSION})"
        )
        self.version = version



class Refused(Exception):
    """
    Raised to refuse a peer with an ERROR message.

    @ivar code: one of the C{ERR_*} codes.
    @ivar reason: a human-readable reason, sent to the peer and logged.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
