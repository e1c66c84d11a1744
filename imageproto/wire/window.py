# -*- test-case-name: tests.test_sender -*-
"""
The sender's window (PROTOCOL.md, "Window"): how many frames a sender keeps
unacknowledged when it is not told, the same for the Twisted sender
(L{imageproto.sender.flow}) and the blocking client (L{imageproto.client}).

A live source's frames go stale while they wait, so it keeps few; a finite
source wants throughput: with 8 a sender on loopback sat idle waiting for
ACKs and was woken for every few of them (bench/README.md, "Issue 11,
round 3").
"""

from __future__ import annotations

__all__ = ["LIVE_WINDOW", "FINITE_WINDOW", "defaultWindow"]

#: The default window of a live source (camera, test pattern).
LIVE_WINDOW = 8
#: The default window of a finite source (video file, image folder).
FINITE_WINDOW = 16


def defaultWindow(live: bool) -> int:
    """
    The window a sender gets when none is given: L{LIVE_WINDOW} or
    L{FINITE_WINDOW}.
    """
    return LIVE_WINDOW if live else FINITE_WINDOW
