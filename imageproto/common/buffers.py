# -*- test-case-name: tests.test_common -*-
"""
What is left of a gathered write (C{sendmsg} of several buffers) after
the kernel took part of it: the one rule both senders' direct paths
(L{imageproto.protocol.direct}, L{imageproto.client.connection}) follow.
"""

from __future__ import annotations

__all__ = ["partsAfter"]


def partsAfter(parts: list, sent: int) -> list:
    """
    The buffers of C{parts} still to send once the first C{sent} bytes
    went: empty when all did, else a view of the rest of the part the
    write stopped in, then the parts after it (nothing copied).
    """
    for i, part in enumerate(parts):
        size = len(part)
        if sent < size:
            return [memoryview(part)[sent:], *parts[i + 1 :]]
        sent -= size
    return []
