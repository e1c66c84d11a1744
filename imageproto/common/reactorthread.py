# -*- test-case-name: tests.test_hub -*-
"""
A private Twisted reactor running in a daemon thread, for blocking APIs
(L{imageproto.hub}) that run real Twisted code underneath a script that
knows nothing of Twisted.  Uninstalled, so it never disturbs the global
reactor of a process that has one, and several can run at once.
"""

from __future__ import annotations

import threading

from twisted.internet.threads import blockingCallFromThread

__all__ = ["ReactorThread"]


def _privateReactor():
    """
    A new, uninstalled reactor of the best kind for this platform.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()
    except ImportError:  # pragma: no cover (not Linux)
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()


class ReactorThread:
    """
    A private reactor running in a daemon thread.

    @ivar reactor: the reactor; touch it only through L{call} or
        C{reactor.callFromThread}.
    """

    def __init__(self) -> None:
        self.reactor = _privateReactor()
        self._thread = threading.Thread(
            target=self.reactor.run,
            kwargs={"installSignalHandlers": False},
            name="imageproto-reactor",
            daemon=True,
        )
        self._thread.start()

    def call(self, f, *args, **kwargs):
        """
        Run C{f} in the reactor thread and return its result (waiting for
        a returned L{Deferred}); raise what it raises.
        """
        return blockingCallFromThread(self.reactor, f, *args, **kwargs)

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        self._thread.join(10)
