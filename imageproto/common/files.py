# -*- test-case-name: tests.test_common -*-
"""
Atomic, durable file writes: the one way the package replaces a file that
others read (saved frames, the receiver's stats file, a sender's results).

The bytes go to a hidden temporary name beside the target, are flushed to
the disk with C{fsync}, and the temporary file is renamed over the target
with C{os.replace}; then the directory is synced so that the rename itself
is on the disk.  A reader therefore sees the old file or the new one, never
a part; and when the call returns, the new file survives a power cut or a
kernel crash, not only a crash of this process.  That matters because the
receiver acknowledges a saved frame only after the write returns: an ACK
that means "on disk" must stay true after the machine loses power.  The
price is a disk flush per write (milliseconds on a spinning disk, less on
an SSD, nothing on tmpfs); these functions block, so call them in a worker
thread, never on the reactor.

On failure the temporary file is removed and the old target is left as it
was.
"""

from __future__ import annotations

import itertools
import json
import os

__all__ = ["writeBytesAtomically", "writeJsonAtomically"]

# Makes temporary names unique between threads of one process; the process
# id makes them unique between processes writing the same directory.
_tempNames = itertools.count()


def _syncDirectory(directory: str) -> None:
    """
    Flush a directory's entries (a rename into it) to the disk.  Platforms
    that cannot open a directory (Windows) make renames durable themselves.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeBytesAtomically(path: str, data: bytes) -> None:
    """
    Replace the file at C{path} with C{data}, atomically and durably (see
    the module docstring).  The directory must exist.

    @param path: the file to create or replace.
    @param data: its new contents.
    @raise OSError: if the write, the sync or the rename fails; then no
        temporary file is left behind and C{path} is untouched.
    """
    directory, name = os.path.split(path)
    temporary = os.path.join(
        directory, f".{name}.{os.getpid()}.{next(_tempNames)}.part"
    )
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _syncDirectory(directory)


def writeJsonAtomically(
    path: str, value, indent: int | None = 1, sortKeys: bool = True
) -> None:
    """
    Replace the file at C{path} with C{value} as strict JSON (RFC 8259) and
    a final newline, through L{writeBytesAtomically}.

    Strict means no C{NaN} or C{Infinity}: Python's C{json} writes them by
    default, but they are not JSON and other readers (browsers, C{jq})
    refuse the whole file.  The value is serialized before anything is
    written, so a value that cannot be leaves the old file as it was.

    @param value: JSON-ready data (dicts, lists, strings, finite numbers,
        booleans, C{None}).
    @param indent: as for L{json.dumps}; C{None} for one line.
    @param sortKeys: write object keys in sorted order.
    @raise ValueError: for a non-finite float.
    @raise TypeError: for a value JSON has no form for.
    """
    text = json.dumps(value, indent=indent, sort_keys=sortKeys, allow_nan=False)
    writeBytesAtomically(path, (text + "\n").encode("utf-8"))
