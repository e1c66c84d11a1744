# -*- test-case-name: tests.test_common -*-
"""
The fallback to the global reactor, written once.

Classes and functions that schedule or listen take their reactor (or clock)
as a parameter so tests can pass a L{twisted.internet.task.Clock} or a
L{twisted.internet.testing.MemoryReactorClock}; production code passes
nothing and gets the global one.  Importing C{twisted.internet.reactor}
installs the default reactor, so it is done only when the fallback is used,
never at import time: that would stop C{twistd} or a test runner choosing
another reactor.
"""

from __future__ import annotations

__all__ = ["defaultReactor"]


def defaultReactor(reactor=None):
    """
    C{reactor} itself, or the global reactor when it is C{None}.

    @param reactor: a reactor, a clock, or C{None}.
    """
    if reactor is None:
        from twisted.internet import reactor
    return reactor
