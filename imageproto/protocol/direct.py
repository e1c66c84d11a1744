# -*- test-case-name: tests.test_protocol -*-
"""
Writing straight to a plain TCP socket, past Twisted's write buffer, when
that buffer is empty: the per-frame writes of both ends (the sender's
FRAMEs, the receiver's ACKs).

Through C{transport.write} bytes wait in the transport until the reactor's
next turn finds the socket writable (and a FRAME is first copied into one
string, at most C{SEND_LIMIT}, 128 KiB, going out a turn); the receiver's
ACKs paid a second reactor turn and two C{epoll} changes per read for it
(bench/README.md, "Issue 11, round 2" and "round 3").  Whatever the kernel
does not take is queued in the transport as usual, and L{sendNow} declines
while the transport holds anything, so the order on the wire is the order
of the calls.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.protocols.policies import ProtocolWrapper

__all__ = ["plainTcp", "sendNow"]

_TCP = (tcp.Client, tcp.Server)


def plainTcp(transport):
    """
    The plain TCP connection C{transport} writes to: itself, or the one
    under any number of wrappers that only pass writes through
    (L{ProtocolWrapper}s such as the sender service's loss reporter or the
    receiver's connection limits, not TLS, which encrypts).  C{None} for
    anything else.
    """
    while (
        isinstance(transport, ProtocolWrapper)
        and type(transport).write is ProtocolWrapper.write
        and type(transport).writeSequence is ProtocolWrapper.writeSequence
    ):
        transport = transport.transport
    if transport.__class__ in _TCP and not transport.TLS:
        return transport
    return None


def sendNow(transport, parts: list) -> bool:
    """
    Give C{parts} (buffers, in order) straight to the socket of
    C{transport}, a plain TCP connection (L{plainTcp}) that holds nothing
    unsent, in one C{sendmsg}, and queue in the transport whatever the
    kernel did not take.

    @return: C{False}, having sent nothing, if the transport is closing or
        still holds data (which must go first): write through the
        transport then.
    """
    if (
        transport.disconnecting
        or not transport.connected
        or transport._tempDataLen
        or transport.offset != len(transport.dataBuffer)
    ):
        return False
    try:
        sent = transport.socket.sendmsg(parts)
    except BlockingIOError:
        sent = 0
    except OSError:
        # Let the transport's own write meet the error and report it.
        return False
    for i, part in enumerate(parts):
        size = len(part)
        if sent < size:
            rest = [memoryview(part)[sent:], *parts[i + 1 :]]
            transport.write(b"".join(rest))
            break
        sent -= size
    return True
