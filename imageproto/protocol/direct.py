# -*- test-case-name: tests.test_protocol -*-
"""
Writing straight to a plain TCP socket, past Twisted's write buffer, when
that buffer is empty: the per-frame writes of both ends (the sender's
FRAMEs, the receiver's ACKs); and reading a streaming sender's socket into
one reused buffer (L{readInto}).

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

import threading
from functools import partial

from twisted.internet import main, tcp
from twisted.internet.tcp import EWOULDBLOCK
from twisted.protocols.policies import ProtocolWrapper

from imageproto.common.buffers import partsAfter

__all__ = ["plainTcp", "sendNow", "readInto", "READ_INTO_BYTES"]

#: How much a L{readInto} connection reads a reactor turn.
READ_INTO_BYTES = 1024 * 1024

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
    rest = partsAfter(parts, sent)
    if rest:
        transport.write(b"".join(rest))
    return True


# One read buffer per reactor thread, shared by its connections: a reactor
# reads one connection at a time, and each read is handled (its messages
# decoded and copied out, the rest copied into the protocol's own buffer)
# before the next.
_buffers = threading.local()


def readInto(transport) -> bool:
    """
    Make the plain TCP connection under C{transport} (L{plainTcp}) read
    with C{recv_into} into one buffer of L{READ_INTO_BYTES} that this
    thread's connections share, and hand its protocol a C{memoryview} of
    each read: Twisted's C{recv(bufferSize)} makes a new string per read,
    and at 1 MiB the allocator gave each one fresh pages to fault in (16
    page faults a frame, receiver system CPU x5 in bench/README.md,
    "round 3").

    Only for a protocol that copies what it keeps of C{dataReceived}'s
    data before returning (L{imageproto.protocol.framing.MessageProtocol}
    does): the buffer is overwritten by the next read.

    @return: whether it was done (not for TLS or a transport that is not
        TCP, which go on reading as before).
    """
    tcp = plainTcp(transport)
    if tcp is None:
        return False
    tcp.doRead = partial(_doRead, tcp)
    return True


def _doRead(tcp):
    """
    C{tcp.Connection.doRead}, reading into the shared buffer.
    """
    view = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(READ_INTO_BYTES))
    try:
        size = tcp.socket.recv_into(view)
    except OSError as e:
        if e.args[0] == EWOULDBLOCK:
            return None
        return main.CONNECTION_LOST
    if not size:
        return main.CONNECTION_DONE
    with view[:size] as data:
        tcp.protocol.dataReceived(data)
    return None
