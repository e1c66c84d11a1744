# -*- test-case-name: tests.test_client -*-
"""
What the blocking client raises: L{ClientError} and its kinds.
"""

from __future__ import annotations

__all__ = ["ClientError", "ServerRefused", "FrameRejected", "MetadataUnsupported"]


class ClientError(Exception):
    """
    The server could not be reached or broke the protocol.
    """


class ServerRefused(ClientError):
    """
    The server refused the stream (ERROR during the handshake): a bad name,
    a missing token, too many streams.

    @ivar code: the C{wire.ERR_*} code.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server refused the stream: {reason} (code {code})")
        self.code = code
        self.reason = reason


class FrameRejected(ClientError):
    """
    The server refused this one frame (REJECT); the stream carries on.
    """


class MetadataUnsupported(ClientError):
    """
    A frame was given metadata and the server (or this version of
    imageproto) cannot carry it.
    """


class _Lost(Exception):
    """
    The connection went away while a frame waited for its answer.
    """
