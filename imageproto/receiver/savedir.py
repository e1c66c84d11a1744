# -*- test-case-name: tests.test_savedir -*-
"""
C{--save-dir}: every accepted frame, as received, in a file that stays.

Layout::

    DIR/<stream>/<first receipt, UTC>-<session, 16 hex digits>/<seq, 8 digits>.jpg
    DIR/cam-1/20261129T090612.123456Z-1f3a9c0b2d4e5f60/00000000.jpg
    DIR/cam-1/20261129T090612.123456Z-1f3a9c0b2d4e5f60/00000000.json

A frame that carries metadata (PROTOCOL.md, per-frame metadata) gets a
sidecar C{<seq>.json} beside its JPEG: the metadata as one line of JSON.

One folder per sender session (a run of the sender), named for when the
receiver first stored a frame of it, so C{ls DIR/<stream>} lists a stream's
runs in order and C{ls DIR/<stream>/*} its frames in capture order.  A new
session never writes into an earlier one's folder, so a camera that reboots,
or a second sender under the same name, never overwrites a frame the
receiver acknowledged: a file stays until the operator deletes it.  A
finite source run again continues its session (see PROTOCOL.md,
Resuming); a frame whose file already exists (the receiver restarted in
between) is recognised, acknowledged and counted as a duplicate, not
written again.

Files are written under a temporary name, flushed to the disk and renamed
(L{imageproto.common.files.writeBytesAtomically}), in a worker thread; the
sidecar before the JPEG, so that a JPEG on disk (what a restarted receiver
recognises as stored) always has its metadata beside it.
A write that fails rejects the frame with the reason; a full disk is
temporary (the sender is told to retry), and is logged once until frames
can be stored again, which happens by itself when space returns.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from imageproto.common.files import writeBytesAtomically, writeJsonAtomically
from imageproto.receiver.pipeline import (
    ALREADY_STORED,
    ConsumerBase,
    IFrameConsumer,
    ReceivedFrame,
    StorageError,
)

__all__ = [
    "SaveDirSink",
    "framePath",
    "metadataPath",
    "savedFrames",
    "sessionFolder",
    "TEMPORARY_ERRORS",
]

# Conditions that pass without the receiver's help: space or quota freed,
# descriptors closed, a flaky disk.  Anything else (permissions, a
# read-only file system) needs the operator, and the frame is refused for
# good.
TEMPORARY_ERRORS = frozenset(
    [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EMFILE, errno.ENFILE,
     errno.ENOMEM]
)


def sessionFolder(start: float, session: int) -> str:
    """
    The folder name of a session first stored at C{start} (seconds since
    the epoch): C{<UTC time to the microsecond>Z-<session in hex>}.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(start))
    micros = int(round((start % 1) * 1e6)) % 1_000_000
    return f"{stamp}.{micros:06d}Z-{session:016x}"


def framePath(directory: str, stream: str, folder: str, seq: int) -> str:
    """
    Where frame C{seq} of C{stream} is stored, in session folder C{folder}
    (see L{sessionFolder}).
    """
    return os.path.join(directory, stream, folder, f"{seq:08d}.jpg")


def metadataPath(jpegPath: str) -> str:
    """
    Where the metadata of the frame stored at C{jpegPath} is (see
    L{framePath}): the same name ending in C{.json}.
    """
    return os.path.splitext(jpegPath)[0] + ".json"


class _Folders:
    """
    The session folders in use, found or made in worker threads: a session
    seen before (the receiver restarted) goes on in its existing folder.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._known: dict = {}
        self._lock = threading.Lock()

    def folder(self, stream: str, session: int, start: float) -> str:
        key = (stream, session)
        with self._lock:
            found = self._known.get(key)
            if found is None:
                streamDir = os.path.join(self.directory, stream)
                os.makedirs(streamDir, exist_ok=True)
                suffix = f"Z-{session:016x}"
                earlier = sorted(n for n in os.listdir(streamDir) if n.endswith(suffix))
                found = earlier[0] if earlier else sessionFolder(start, session)
                os.makedirs(os.path.join(streamDir, found), exist_ok=True)
                self._known[key] = found
            return found

    def store(
        self,
        stream: str,
        session: int,
        start: float,
        seq: int,
        jpeg: bytes,
        metadata=None,
    ):
        """
        Write one frame, and its metadata unless C{None} (in a worker
        thread).

        @return: the path, and whether it was written now (C{False}: it was
            there already).
        """
        path = framePath(self.directory, stream, self.folder(stream, session, start), seq)
        if os.path.exists(path):
            return path, False
        if metadata is not None:
            writeJsonAtomically(metadataPath(path), metadata, indent=None, sortKeys=False)
        writeBytesAtomically(path, jpeg)
        return path, True


@implementer(IFrameConsumer)
class SaveDirSink(ConsumerBase):
    """
    Writes each frame's bytes, untouched, and its metadata, if any, under
    C{directory} (see the module docstring) in a worker thread; the frame is
    acknowledged only once its files are in place.

    @param directory: the directory to write under (created when needed).
    @param runInThread: C{f(callable, *args) -> Deferred}, running the call
        off the reactor (in production C{partial(deferToThreadPool, reactor,
        pool)}).
    """

    log = Logger()

    def __init__(self, directory: str, runInThread: Callable[..., Deferred]) -> None:
        self.directory = directory
        self._runInThread = runInThread
        self._folders = _Folders(directory)
        # The errno frames are failing with now, and how many failed so.
        self._failing: int | None = None
        self._failures = 0

    def frameReceived(self, frame: ReceivedFrame) -> Deferred:
        d = self._runInThread(
            self._folders.store,
            frame.stream,
            frame.session,
            frame.receiveTime,
            frame.seq,
            frame.jpeg,
            frame.metadata,
        )
        return d.addCallbacks(self._stored, self._failed, errbackArgs=(frame,))

    def _stored(self, outcome):
        path, fresh = outcome
        if self._failing is not None:
            self.log.info(
                "storing frames in {directory} again ({count} frames were not stored)",
                directory=self.directory,
                count=self._failures,
            )
            self._failing, self._failures = None, 0
        return None if fresh else ALREADY_STORED

    def _failed(self, failure, frame: ReceivedFrame):
        failure.trap(OSError)
        error = failure.value
        temporary = error.errno in TEMPORARY_ERRORS
        where = error.filename or os.path.join(self.directory, frame.stream)
        reason = f"cannot store the frame: {error.strerror or error} ({where})"
        self._failures += 1
        if self._failing != error.errno:
            self._failing = error.errno
            self.log.error(
                "cannot store frame {seq} of {stream} at {path}: {error}; frames "
                "are refused{how} until this is fixed (logged once)",
                seq=frame.seq,
                stream=frame.stream,
                path=where,
                error=error.strerror or str(error),
                how=", and senders told to retry," if temporary else "",
            )
        raise StorageError(reason, temporary)


def savedFrames(directory: str, stream: str) -> list[str]:
    """
    The files of C{stream}'s frames under C{directory}, in capture order
    (session folders in order, then frames).
    """
    root = os.path.join(directory, stream)
    if not os.path.isdir(root):
        return []
    paths = []
    for folder in sorted(os.listdir(root)):
        inside = os.path.join(root, folder)
        if os.path.isdir(inside):
            paths.extend(
                os.path.join(inside, name)
                for name in sorted(os.listdir(inside))
                if name.endswith(".jpg") and not name.startswith(".")
            )
    return paths
