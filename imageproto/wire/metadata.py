# -*- test-case-name: tests.test_wire -*-
"""
Per-frame metadata: a small application payload a FRAME may carry after its
trailer (C{PROTOCOL.md}, "Per-frame metadata").

On the wire and in L{imageproto.wire.Frame} metadata is JSON I{text}: an
object or a string, at most L{MAX_METADATA_BYTES} bytes of UTF-8, strict
JSON (no C{NaN} or C{Infinity}, no number too large for a double), nested
at most L{MAX_METADATA_DEPTH} objects and arrays deep.  L{encodeMetadata}
makes such text from a Python value and L{decodeMetadata} turns it back
into one; both raise C{ValueError} for anything else, as does
L{checkMetadata}, the one rule the Frame constructor and the decoder apply.
"""

from __future__ import annotations

import json
import math

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "checkMetadata",
    "encodeMetadata",
    "decodeMetadata",
]

# The most UTF-8 bytes of metadata one FRAME carries.
MAX_METADATA_BYTES = 4096
# The most objects and arrays nested inside one another: a fixed rule rather
# than whatever recursion limit the reading interpreter happens to have
# (4096 bytes hold 4000 nested brackets), and shallow enough that every
# consumer can serialise the value again.
MAX_METADATA_DEPTH = 32


# Strict JSON for the wire's JSON fields (metadata here, RESULT's detections
# in the codec): NaN and the infinities refused, and numbers that overflow.
def nonFinite(token: str):
    raise ValueError(f"{token} is not JSON")


def finiteFloat(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"number {token[:20]} is out of range")
    return value


# One decoder, built once: json.loads with hooks builds a new one per call.
_decoder = json.JSONDecoder(parse_constant=nonFinite, parse_float=finiteFloat)


def _tooDeep(value) -> bool:
    """
    Whether C{value} nests more than L{MAX_METADATA_DEPTH} containers.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_METADATA_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def decodeMetadata(text: str):
    """
    The value of metadata text: a C{dict} for a JSON object, a C{str} for a
    JSON string.

    @raise ValueError: if C{text} breaks a rule of the module docstring.
    @raise TypeError: if C{text} is not a C{str}.
    """
    if not isinstance(text, str):
        raise TypeError(
            f"metadata must be JSON text (a str; see wire.encodeMetadata), "
            f"not {type(text).__name__}"
        )
    # Characters never outnumber UTF-8 bytes: a long text fails unencoded.
    try:
        tooLong = (
            len(text) > MAX_METADATA_BYTES
            or len(text.encode("utf-8")) > MAX_METADATA_BYTES
        )
    except UnicodeEncodeError:
        raise ValueError("metadata holds a lone surrogate, which UTF-8 cannot") from None
    if tooLong:
        raise ValueError(f"metadata is longer than {MAX_METADATA_BYTES} bytes of UTF-8")
    try:
        value = _decoder.decode(text)
    except RecursionError:
        raise ValueError(
            f"metadata nests more than {MAX_METADATA_DEPTH} objects and arrays"
        ) from None
    except ValueError as e:
        raise ValueError(f"metadata is not JSON: {e}") from None
    if not isinstance(value, (dict, str)):
        raise ValueError(
            f"metadata must be a JSON object or string, not {type(value).__name__}"
        )
    # Fewer brackets than the bound cannot nest past it: skip the walk.
    if text.count("[") + text.count("{") > MAX_METADATA_DEPTH and _tooDeep(value):
        raise ValueError(
            f"metadata nests more than {MAX_METADATA_DEPTH} objects and arrays"
        )
    return value


# The last text that passed checkMetadata.  A sender repeats one fixed
# metadata text on every frame, which is then checked once, not per frame.
# (Assigning a name is atomic, so threads sharing this at worst check again.)
_lastValid: str | None = None


def checkMetadata(text: str) -> None:
    """
    Check that C{text} is valid metadata (see L{decodeMetadata}).

    @raise ValueError: if it is not.
    @raise TypeError: if C{text} is not a C{str}.
    """
    global _lastValid
    if type(text) is str and text == _lastValid:
        return
    decodeMetadata(text)
    _lastValid = text


def encodeMetadata(value) -> str:
    """
    Metadata text for C{value}: compact JSON (no insignificant whitespace,
    non-ASCII characters as themselves).

    @param value: a C{dict} (a JSON object) or a C{str} (a JSON string)
        made of JSON-ready values: dicts, lists, strings, finite numbers,
        booleans and C{None}.
    @raise ValueError: for another top-level type, a value JSON has no form
        for (C{NaN}, a set), or text over L{MAX_METADATA_BYTES} bytes or
        L{MAX_METADATA_DEPTH} levels.
    """
    if not isinstance(value, (dict, str)):
        raise ValueError(
            f"metadata must be a dict (JSON object) or a str (JSON string), "
            f"not {type(value).__name__}"
        )
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"metadata is not JSON-serialisable: {e}") from None
    checkMetadata(text)
    return text
