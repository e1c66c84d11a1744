# -*- test-case-name: tests.test_descriptors -*-
"""
File descriptors: keep viewer and compatibility connections from using up
the ones senders need.

Every open connection is a file descriptor, and the common soft limit is
1024.  Without a cap of their own, idle connections to C{--web} once made
every C{accept} fail with EMFILE, frame port included.  So:

  - L{raiseFileLimit}: at start the receiver raises its soft C{RLIMIT_NOFILE}
    to the hard limit.
  - L{ConnectionCap}: the web port (C{--web-max-connections}) and each
    compatibility port (C{--compat-max-connections}) have a cap; a
    connection over it is closed as soon as it is accepted (no protocol is
    built), with one warning per episode.
  - L{fitCaps}: those caps are lowered, if need be, so that together they
    leave room for C{--max-connections} senders plus L{RESERVED_FDS} for
    files (frame writes, recordings, logs, the reactor's own).
  - L{DescriptorWatch}: if the process runs out all the same, one error per
    episode says so and what to do, instead of a line per failed accept.
"""

from __future__ import annotations

import time

from twisted.application.service import Service
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

__all__ = [
    "RESERVED_FDS",
    "ConnectionCap",
    "DescriptorWatch",
    "fitCaps",
    "raiseFileLimit",
]

# Descriptors kept for everything but connections: the reactor (epoll,
# waker), listening ports, log and stats files, frame and recording writes
# from the worker threads, the detector's model files.
RESERVED_FDS = 64


def raiseFileLimit(resource=None) -> tuple[int, int] | None:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit (where the platform
    allows it).

    @return: C{(soft, hard)} in effect afterwards, or C{None} without the
        C{resource} module.
    """
    if resource is None:
        try:
            import resource
        except ImportError:  # pragma: no cover (Windows)
            return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def fitCaps(limit: int, frameConnections: int, caps: list[int]) -> list[int]:
    """
    Lower C{caps} (of the web and compatibility ports) in proportion so that
    with C{frameConnections} and L{RESERVED_FDS} they fit in C{limit}
    descriptors; each keeps at least 1.
    """
    room = max(len(caps), limit - RESERVED_FDS - frameConnections)
    total = sum(caps)
    if total <= room:
        return list(caps)
    return [max(1, cap * room // total) for cap in caps]


class ConnectionCap(WrappingFactory):
    """
    Wraps a server factory so that at most C{limit} of its connections are
    open; one more is closed as soon as it is accepted.

    @ivar option: the option that sets C{limit}, named in the log.
    @ivar refused: connections closed for being over the cap, in all.
    """

    log = Logger()

    def __init__(self, wrappedFactory, limit: int, option: str) -> None:
        super().__init__(wrappedFactory)
        self.limit = limit
        self.option = option
        self.refused = 0
        self._refusing = False

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.limit:
            self.refused += 1
            if not self._refusing:
                self._refusing = True
                self.log.warn(
                    "{count} connections open, {option} {limit}: closing new "
                    "ones until some close",
                    count=len(self.protocols),
                    option=self.option,
                    limit=self.limit,
                )
            # No protocol: the port closes the new socket at once.
            return None
        if self._refusing:
            self._refusing = False
            self.log.info(
                "under {option} {limit} again; accepting ({refused} refused so far)",
                option=self.option,
                limit=self.limit,
                refused=self.refused,
            )
        return super().buildProtocol(addr)


def unwrapTransport(transport):
    """
    The transport under a L{ConnectionCap}'s protocol wrapper (whose
    attributes read through to it, but are set on the wrapper).
    """
    while isinstance(transport, ProtocolWrapper) and isinstance(
        transport.factory, ConnectionCap
    ):
        transport = transport.transport
    return transport


class DescriptorWatch(Service):
    """
    At start, raises the file limit (L{raiseFileLimit}) and fits the caps of
    C{caps} (L{ConnectionCap}s) beside C{frameConnections()} (L{fitCaps}).
    While running, turns Twisted's log line per failed C{accept} (EMFILE,
    ENFILE: out of file descriptors) into one error per episode saying what
    to do.  An episode ends after C{quiet} seconds without such a failure.
    """

    log = Logger()

    def __init__(
        self,
        caps: list,
        frameConnections,
        advice: str,
        quiet: float = 30.0,
        now=time.monotonic,
        resource=None,
    ) -> None:
        self.caps = caps
        self.frameConnections = frameConnections
        self.resource = resource
        self.limits = None
        self.advice = advice
        self.quiet = quiet
        self.now = now
        self.episodes = 0
        self._last = None

    def __call__(self, event: dict) -> None:
        text = str(event.get("log_format", "")) + " " + str(event.get("acceptError", ""))
        if "EMFILE" not in text and "ENFILE" not in text and "Too many open files" not in text:
            return
        now = self.now()
        if self._last is None or now - self._last > self.quiet:
            self.episodes += 1
            self.log.error(
                "the receiver ran out of file descriptors and cannot accept "
                "connections (senders included): {advice}",
                advice=self.advice,
            )
        self._last = now

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._fit()

    def _fit(self) -> None:
        if self.limits is not None:
            return
        self.limits = raiseFileLimit(self.resource)
        if self.limits is None:
            return
        soft, hard = self.limits
        frame = self.frameConnections() or 0
        wanted = [cap.limit for cap in self.caps]
        fitted = fitCaps(soft, frame, wanted)
        for cap, limit in zip(self.caps, fitted):
            if limit < cap.limit:
                self.log.warn(
                    "{option} lowered from {wanted} to {limit}: with {limit_fds} "
                    "file descriptors (ulimit -n; hard limit {hard}), "
                    "--max-connections {frame} and {reserved} for files, that is "
                    "what leaves senders room",
                    option=cap.option,
                    wanted=cap.limit,
                    limit=limit,
                    limit_fds=soft,
                    hard=hard,
                    frame=frame,
                    reserved=RESERVED_FDS,
                )
                cap.limit = limit
        if frame + RESERVED_FDS > soft:
            self.log.warn(
                "--max-connections {frame} does not fit in {soft} file descriptors "
                "(ulimit -n); raise the limit or lower --max-connections",
                frame=frame,
                soft=soft,
            )

    def startService(self) -> None:
        super().startService()
        self._fit()
        globalLogPublisher.addObserver(self)

    def stopService(self) -> None:
        super().stopService()
        globalLogPublisher.removeObserver(self)
