# -*- test-case-name: tests.test_auth -*-
"""
The authentication digest both ends compute (PROTOCOL.md, Authentication)::

    HMAC-SHA256(key=token_utf8,
                msg=b"imageproto-auth-v1" + server_nonce + client_nonce
                    + name_utf8)
"""

from __future__ import annotations

import hashlib
import hmac
import os

from imageproto.wire.messages import NONCE_BYTES

__all__ = ["AUTH_CONTEXT", "newNonce", "computeDigest"]

AUTH_CONTEXT = b"imageproto-auth-v1"


def newNonce() -> bytes:
    """
    A fresh random nonce from the operating system's CSPRNG.
    """
    return os.urandom(NONCE_BYTES)


def computeDigest(
    token: bytes, serverNonce: bytes, clientNonce: bytes, name: str
) -> bytes:
    """
    The AUTH digest: HMAC-SHA256 keyed with C{token} over
    C{AUTH_CONTEXT + serverNonce + clientNonce + name.encode("utf-8")}.

    @param token: the shared token's UTF-8 bytes.
    @param serverNonce: the 32 bytes of the CHALLENGE.
    @param clientNonce: the sender's own 32 random bytes.
    @param name: the stream name the sender gave in HELLO.
    """
    if len(serverNonce) != NONCE_BYTES or len(clientNonce) != NONCE_BYTES:
        raise ValueError("nonces must be 32 bytes")
    message = AUTH_CONTEXT + serverNonce + clientNonce + name.encode("utf-8")
    return hmac.new(token, message, hashlib.sha256).digest()
