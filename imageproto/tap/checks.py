# -*- test-case-name: tests.test_checks -*-
"""
The checks command-line values go through, written once for both twistd
commands: numbers and their ranges, ports and endpoint descriptions, files
and directories.

A I{check} is called as C{check(name, value)} with the option's long name
and its value, returns the value to store (converted, made absolute) and
raises L{usage.UsageError} naming the option.  An Options class lists its
checks as C{(name, check)} pairs and runs them from C{postOptions} with
L{apply}; an option left unset (C{None}) is not checked.

L{coercer} builds the other kind, for the last element of an
C{optParameters} entry: its C{coerceDoc} is shown by C{--help}, and twistd
reports its C{ValueError} as a usage error.
"""

from __future__ import annotations

import os
from typing import Callable

from twisted.python import usage

__all__ = [
    "apply",
    "number",
    "coercer",
    "endpoint",
    "clientEndpoint",
    "directory",
    "existingDirectory",
    "existingFile",
    "newFile",
    "CLOCK_SKEW_VARIABLE",
    "clockSkew",
    "metadata",
]

_INFINITY = float("inf")


def apply(options, checks) -> None:
    """
    Run each C{(name, check)} of C{checks} on C{options[name]}, in order,
    storing what it returns; unset options (C{None}) are skipped.
    """
    for name, check in checks:
        if options[name] is not None:
            options[name] = check(name, options[name])


def _rangeText(kind: type, minimum, maximum, above) -> str:
    noun = "an integer" if kind is int else "a number"
    if above == 0 and minimum is None and maximum is None:
        return "a positive " + ("integer" if kind is int else "number")
    if above is not None:
        return f"{noun} greater than {above}"
    if maximum is None:
        return f"{noun} at least {minimum}"
    return f"{noun} between {minimum} and {maximum}"


def _convert(raw, kind: type, minimum, maximum, above):
    """
    C{raw} as a finite C{kind} within the bounds.

    @raise ValueError: C{"must be ..."}, saying what is allowed.
    """
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        value = None
    if (
        value is None
        or value != value  # NaN
        or value in (_INFINITY, -_INFINITY)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (above is not None and value <= above)
    ):
        raise ValueError("must be " + _rangeText(kind, minimum, maximum, above))
    return value


def number(kind: type = int, minimum=None, maximum=None, above=None) -> Callable:
    """
    A check that converts to C{kind} (C{int} or C{float}) and requires a
    finite value C{>= minimum}, C{<= maximum} and C{> above} (each when
    given); the error reads C{--name VALUE: must be an integer at least 1}.
    """

    def check(name: str, value):
        try:
            return _convert(value, kind, minimum, maximum, above)
        except ValueError as e:
            raise usage.UsageError(f"--{name} {value}: {e}") from None

    return check


def coercer(kind: type = int, minimum=None, maximum=None, above=None, doc=None) -> Callable:
    """
    The same rule as L{number}, as an C{optParameters} coercer.

    @param doc: the C{coerceDoc} C{--help} appends to the option's text.
    """

    def coerce(value):
        try:
            return _convert(value, kind, minimum, maximum, above)
        except ValueError as e:
            raise ValueError(f"{value}: {e}") from None

    if doc is not None:
        coerce.coerceDoc = doc
    return coerce


def endpoint(name: str, value: str) -> str:
    """
    A port number or server endpoint description, as a server endpoint
    description: a bare number means TCP on every interface.  Parsing opens
    nothing; the endpoint is built again with the real reactor when the
    service starts.
    """
    text = value.strip()
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise usage.UsageError(f"--{name} {value}: port numbers end at 65535")
        return f"tcp:{port}"
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, text)
    except Exception as e:
        raise usage.UsageError(
            f"--{name} {value!r} is neither a port number nor a server endpoint "
            f"description such as tcp:8080:interface=127.0.0.1 ({e})"
        ) from None
    return text


def clientEndpoint(name: str, value: str) -> str:
    """
    A client endpoint description Twisted can parse (building the endpoint
    opens nothing; no reactor is given, so that parsing options does not
    install one before twistd has chosen it).
    """
    from twisted.internet.endpoints import clientFromString

    try:
        clientFromString(None, value)
    except (ValueError, TypeError, KeyError) as e:
        raise usage.UsageError(f"bad --{name} {value!r}: {e}") from None
    return value


def directory(name: str, value: str) -> str:
    """
    An absolute directory path that is a directory or does not exist yet
    (the feature creates it).
    """
    path = os.path.abspath(value)
    if os.path.exists(path) and not os.path.isdir(path):
        raise usage.UsageError(f"--{name} {path}: exists and is not a directory")
    return path


def existingDirectory(name: str, value: str) -> str:
    """
    The absolute path of an existing directory.
    """
    path = os.path.abspath(value)
    if not os.path.isdir(path):
        raise usage.UsageError(f"--{name} {path}: no such directory")
    return path


def existingFile(name: str, value: str) -> str:
    """
    The absolute path of an existing file.
    """
    path = os.path.abspath(value)
    if not os.path.isfile(path):
        raise usage.UsageError(f"--{name} {path}: no such file")
    return path


def metadata(name: str, value: str) -> str:
    """
    Per-frame metadata given as JSON text (an object or a string; see
    L{imageproto.wire.metadata}), rewritten compactly: the text every frame
    carries.
    """
    from imageproto import wire

    try:
        return wire.encodeMetadata(wire.decodeMetadata(value))
    except ValueError as e:
        raise usage.UsageError(
            f"--{name} {value!r}: {e}; give a JSON object such as "
            f"'{{\"site\": \"door\"}}' or a quoted JSON string such as '\"door\"'"
        ) from None


def newFile(name: str, value: str) -> str:
    """
    The absolute path of a file to write, in a directory that exists.
    """
    path = os.path.abspath(value)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise usage.UsageError(f"--{name} {path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise usage.UsageError(f"--{name} {path}: is a directory")
    return path


# A testing aid, deliberately not an option: the sender's clock reads this
# many seconds off (README, "Clock offset").
CLOCK_SKEW_VARIABLE = "IMAGEPROTO_CLOCK_SKEW"


def clockSkew(environ) -> float:
    """
    The seconds C{IMAGEPROTO_CLOCK_SKEW} in C{environ} asks the sender's
    clock to be off by (0 when unset or empty), so that a test can show on
    one machine what a sender whose clock is wrong looks like.

    @raise usage.UsageError: if it is not a finite number.
    """
    raw = environ.get(CLOCK_SKEW_VARIABLE, "").strip()
    if not raw:
        return 0.0
    try:
        skew = float(raw)
    except ValueError:
        skew = _INFINITY
    if skew != skew or skew in (_INFINITY, -_INFINITY):
        raise usage.UsageError(
            f"{CLOCK_SKEW_VARIABLE}={raw}: must be a number of seconds"
        )
    return skew
