# -*- test-case-name: tests.test_wire -*-
"""
The stream-name rule, written once: HELLO names, the directories of
C{--save-dir}, recording file names and the names given to compatibility
clients all follow it.

A name is 1 to 64 characters of C{[A-Za-z0-9._-]} and does not start with
C{.}, so it is safe as a file or directory name on every platform and in a
URL path.
"""

from __future__ import annotations

import re

from imageproto.wire.errors import Refused
from imageproto.wire.messages import ERR_BAD_NAME

__all__ = ["MAX_NAME_LENGTH", "checkStreamName", "isStreamName", "toStreamName"]

MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9._-]{1,%d}" % MAX_NAME_LENGTH)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def isStreamName(name: str) -> bool:
    """
    Whether C{name} obeys the rule.
    """
    return bool(_NAME.fullmatch(name)) and not name.startswith(".")


def checkStreamName(name: str) -> None:
    """
    Enforce the rule.

    @raise Refused: with C{ERR_BAD_NAME} if C{name} breaks it.
    """
    if not isStreamName(name):
        raise Refused(
            ERR_BAD_NAME,
            f"stream name {name!r} must be 1-64 characters of A-Z a-z 0-9 . _ - "
            "and must not start with '.'",
        )


def toStreamName(text: str, fallback: str = "_") -> str:
    """
    The nearest name that obeys the rule: every other character becomes
    C{_}, leading dots go, and a longer text keeps its last 64 characters
    (where a peer's address ends, say).
    """
    name = _UNSAFE.sub("_", text)[-MAX_NAME_LENGTH:].lstrip(".")
    return name or fallback
