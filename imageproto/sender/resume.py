# -*- test-case-name: tests.test_resume -*-
"""
Sessions that name a finite source's content, so that a run after a crash
goes on where the last one stopped.

A sender's HELLO carries a 64-bit session.  A live source draws a random one
per run.  A finite source (a video file, a folder of images) takes one made
from the stream name and what it sends (the file's path, size and
modification time; the folder's image names and sizes), so running the same
source again under the same name is the same session: the receiver, which
remembers what it holds of each session, answers WELCOME with where to go
on (PROTOCOL.md, Resuming), and no frame is stored or counted twice.
Changing the file, the folder or the options that change the frames
(C{--width}, C{--height}, C{--quality}, C{--count}, C{--loop}) makes a new
session; C{--fps} only paces them and does not.  C{--no-resume} draws a
random session, as a live source does.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sourceSession"]


def _describeFile(path: str) -> list:
    info = os.stat(path)
    return [os.path.abspath(path), info.st_size, info.st_mtime_ns]


def sourceSession(name: str, kind: str, path: str, options: tuple = ()) -> int:
    """
    The session of stream C{name} sending the finite source at C{path}.

    @param kind: C{"video"} (a file) or C{"images"} (a folder, every file
        in it is described).
    @param options: anything else that changes the frames sent.
    @raise OSError: if the source cannot be read.
    """
    parts: list = [name, kind, list(options)]
    if kind == "images":
        parts.append(os.path.abspath(path))
        for entry in sorted(os.listdir(path)):
            full = os.path.join(path, entry)
            if os.path.isfile(full):
                parts.append([entry, os.path.getsize(full)])
    else:
        parts.append(_describeFile(path))
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")
