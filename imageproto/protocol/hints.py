# -*- test-case-name: tests.test_hints -*-
"""
What a failed first exchange most likely means, in words for the log.

A sender pointed at the wrong port, or with TLS on one side only, sees only
symptoms: a connection "closed cleanly", an OpenSSL error list, bytes that
are not a message, or no answer at all.  These functions turn each symptom
into the likely cause; they are pure (bytes and strings in, a sentence out).
L{imageproto.protocol.senderhandshake} decides when a symptom applies (only
before anything imageproto-like came back) and the sender's factory logs
each cause once per run.
"""

from __future__ import annotations

from twisted.python.failure import Failure

try:
    from OpenSSL.SSL import Error as _TLSError
except ImportError:  # pragma: no cover - Twisted[tls] is a dependency
    _TLSError = None

__all__ = [
    "closedBeforeAnswer",
    "excerpt",
    "looksLikeTLS",
    "noAnswer",
    "notImageproto",
    "tlsError",
    "tlsHandshakeFailed",
]

# OpenSSL's words for "the other end does not speak TLS at all".
_NOT_TLS = (
    "wrong version number",
    "packet length too long",
    "record layer failure",
    "http request",
    "unexpected eof",
    "unexpected_eof",
)


def excerpt(data: bytes, limit: int = 32) -> str:
    """
    The first C{limit} bytes of C{data} as a short printable string: text
    as text (C{HTTP/1.1 400 Bad Request}), anything else as escapes.
    """
    head = bytes(data[:limit])
    text = head.decode("latin-1")
    shown = "".join(c if " " <= c <= "~" else repr(c)[1:-1] for c in text)
    return shown + ("..." if len(data) > limit else "")


def looksLikeTLS(data: bytes) -> bool:
    """
    Whether C{data} starts like a TLS record (handshake or alert, version
    3.x), the first bytes of a TLS peer on a plain TCP port.
    """
    return len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03


def tlsError(reason: Failure) -> str | None:
    """
    The OpenSSL error in C{reason}, if the connection was lost to a TLS
    failure (a failed handshake, a bad record), as a short string; else
    C{None}.
    """
    if _TLSError is None or not isinstance(reason, Failure):
        return None
    if not reason.check(_TLSError):
        return None
    errors = reason.value.args[0] if reason.value.args else []
    words = []
    if isinstance(errors, list):
        for entry in errors:
            if isinstance(entry, tuple) and entry:
                words.append(str(entry[-1]))
    return ", ".join(w for w in words if w) or str(reason.value) or "TLS error"


def notImageproto(peer: str, data: bytes) -> str:
    """
    The first bytes back from C{peer} were not an imageproto message.
    """
    if looksLikeTLS(data):
        return (
            f"{peer} answered with a TLS record ({excerpt(data, 8)}), not an "
            f"imageproto message: the receiver listens with TLS (--port ssl:...); "
            f"connect with --ca-cert (or a tls: endpoint)"
        )
    return (
        f"{peer} answered {excerpt(data)!r}, not an imageproto message: it is "
        f"likely not an imageproto port (the receiver's --web port, a --compat "
        f"port or another service); point --connect at the receiver's --port"
    )


def noAnswer(peer: str, seconds: float) -> str:
    """
    Nothing came back from C{peer} within the handshake deadline.
    """
    return (
        f"nothing came back from {peer} within {seconds} s of HELLO: it is "
        f"likely not an imageproto port (the receiver's --web port or a --compat "
        f"port reads HELLO and never answers); point --connect at the "
        f"receiver's --port"
    )


def closedBeforeAnswer(peer: str, tls: bool = False) -> str:
    """
    The sender's connection to C{peer} closed before any message came back;
    C{tls} says whether the sender spoke TLS (and its handshake finished).
    """
    if tls:
        return (
            f"{peer} closed the connection without answering HELLO: it is "
            f"likely not an imageproto port; point --connect at the receiver's "
            f"--port"
        )
    return (
        f"{peer} closed the connection without answering HELLO: if the receiver "
        f"listens with TLS (--port ssl:...), connect with --ca-cert (or a tls: "
        f"endpoint); otherwise it is likely not an imageproto port (a --compat "
        f"port, say)"
    )


def tlsHandshakeFailed(peer: str, error: str) -> str:
    """
    A TLS sender's handshake with C{peer} failed with OpenSSL's C{error}.
    """
    if any(word in error.lower() for word in _NOT_TLS):
        return (
            f"the TLS handshake with {peer} failed ({error}): the receiver "
            f"likely listens without TLS (a tcp: --port, or not an imageproto "
            f"port); drop --ca-cert, or give the receiver an ssl: --port"
        )
    return (
        f"the TLS handshake with {peer} failed ({error}): check that --ca-cert "
        f"signed the receiver's certificate and that it names the host in "
        f"--connect, and the client certificate if the receiver has --client-ca"
    )
