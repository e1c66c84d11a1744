# -*- test-case-name: tests.test_auth -*-
"""
Shared-token challenge-response authentication.

The sender proves it holds a token without sending it: after the sender's
HELLO the server sends a fresh 32-byte nonce (CHALLENGE); the sender answers
with a 32-byte nonce of its own and::

    HMAC-SHA256(key=token_utf8,
                msg=b"imageproto-auth-v1" + server_nonce + client_nonce
                    + name_utf8)

(AUTH).  Because the server's nonce is new on every connection, a recorded
handshake cannot be replayed; because the stream name is inside the digest,
it cannot be swapped for another on the way.  PROTOCOL.md (Authentication)
has a test vector.

Token files hold one grant a line: a token, then one or more shell-style
globs naming the streams it may send (C{fnmatch} rules, case-sensitive).
C{#} starts a comment; blank lines are ignored::

    # token                            streams
    3b9f0c2e5d7a41c8a6e2f9d0b7c4e1a2   cam-*  door
    9a1e4c7b2d5f8e0a3c6b9d2e5f8a1c4d   *

A sender reads the same format and uses the first grant's token (the globs,
if any, are ignored), so one line can be copied between the two files.

Pure logic: no Twisted and no sockets here.
"""

from __future__ import annotations

import hmac
from fnmatch import fnmatchcase

from attrs import field, frozen

from imageproto.wire.digest import AUTH_CONTEXT, computeDigest, newNonce

__all__ = [
    "AUTH_CONTEXT",
    "MIN_TOKEN_LENGTH",
    "AuthenticationFailed",
    "TokenFileError",
    "TokenGrant",
    "TokenTable",
    "computeDigest",
    "newNonce",
    "readSenderToken",
]

MIN_TOKEN_LENGTH = 16


class TokenFileError(ValueError):
    """
    A token file that cannot be used; the message names the file and line.
    """


class AuthenticationFailed(Exception):
    """
    A sender's AUTH did not prove a token allowed to send its stream.

    @ivar reason: what to tell the sender (and log); it never contains a
        token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _checkToken(text: str, where: str) -> bytes:
    if len(text) < MIN_TOKEN_LENGTH:
        raise TokenFileError(
            f"{where}: token is {len(text)} characters; at least "
            f"{MIN_TOKEN_LENGTH} are required (try: openssl rand -hex 32)"
        )
    return text.encode("utf-8")


def _grantLines(text: str, source: str):
    """
    Yield C{(where, words)} for each line that is not blank or a comment.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if words:
            yield f"{source}:{number}", words


@frozen
class TokenGrant:
    """
    One line of a server's token file.

    @ivar token: the token's UTF-8 bytes.
    @ivar patterns: globs naming the streams this token may send.
    @ivar where: C{file:line}, for log messages (never the token itself).
    """

    token: bytes = field(repr=False)
    patterns: tuple[str, ...]
    where: str = ""

    def allows(self, name: str) -> bool:
        """
        Whether this grant covers stream C{name}.
        """
        return any(fnmatchcase(name, pattern) for pattern in self.patterns)


@frozen
class TokenTable:
    """
    The tokens a server accepts and the streams each may send.
    """

    grants: tuple[TokenGrant, ...]

    @classmethod
    def parse(cls, text: str, source: str = "<tokens>") -> TokenTable:
        """
        Parse a server token file's text.

        @raise TokenFileError: for a short token, a line without a stream
            glob, a repeated token, or a file with no grants at all.
        """
        grants = []
        seen = set()
        for where, words in _grantLines(text, source):
            token = _checkToken(words[0], where)
            if len(words) < 2:
                raise TokenFileError(
                    f"{where}: a token needs at least one stream glob after "
                    f"it (use * for any stream)"
                )
            if token in seen:
                raise TokenFileError(f"{where}: this token is listed twice")
            seen.add(token)
            grants.append(TokenGrant(token, tuple(words[1:]), where))
        if not grants:
            raise TokenFileError(f"{source}: no tokens")
        return cls(tuple(grants))

    @classmethod
    def fromFile(cls, path: str) -> TokenTable:
        """
        Read and parse the token file at C{path}.

        @raise TokenFileError: if it cannot be read or parsed.
        """
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise TokenFileError(f"cannot read token file {path}: {e}") from None
        return cls.parse(text, path)

    def verify(
        self, name: str, serverNonce: bytes, clientNonce: bytes, digest: bytes
    ) -> TokenGrant:
        """
        Find the grant whose token produced C{digest} and check that it may
        send stream C{name}.

        Every grant's digest is computed and compared with
        L{hmac.compare_digest}, with no early exit, so the time taken does
        not depend on which token (if any) matched.

        @return: the matching grant.
        @raise AuthenticationFailed: if no token matches or the matching
            token's globs do not cover C{name}.
        """
        matched = None
        for grant in self.grants:
            expected = computeDigest(grant.token, serverNonce, clientNonce, name)
            if hmac.compare_digest(expected, digest) and matched is None:
                matched = grant
        if matched is None:
            raise AuthenticationFailed("authentication failed: unknown token")
        if not matched.allows(name):
            raise AuthenticationFailed(
                f"this token may not send stream {name!r}"
            )
        return matched


def readSenderToken(path: str) -> bytes:
    """
    Read the token a sender presents: the first word of the first grant line
    of the file at C{path}.

    @raise TokenFileError: if the file cannot be read, holds no token, or the
        token is too short.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenFileError(f"cannot read token file {path}: {e}") from None
    for where, words in _grantLines(text, path):
        return _checkToken(words[0], where)
    raise TokenFileError(f"{path}: no token")
