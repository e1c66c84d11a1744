"""
The Python cost of each side's per-frame path, without sockets: what
imageproto adds to every frame on top of the kernel's copy, measured in one
process so that two trees can be compared on a busy machine.

  - B{sender}: the embedding API as C{bench.peers} drives it
    (C{imageproto.sender.embed.FrameStream}: C{send(jpeg, captureTime)}
    while the stream is ready, each frame's Deferred fired by its ACK) on a
    welcomed L{FrameSenderProtocol}, whose direct C{sendmsg} path writes to
    a socket stand-in that takes every byte at once; the receiver's ACKs
    arrive as reads of one window's ACKs each, as a receiver that
    acknowledges a read's frames together sends them.
  - B{receiver}: the real C{twistd imageproto --stats-file F} service,
    built by its tap (not started), one connection on a C{StringTransport}
    fed a stream of 63 KB FRAMEs in reads of 180 KiB (what the S1 receiver
    saw per C{recv}), frames cut across reads as they come.

Run from the checkout's root::

    python -m bench.paths [--frames 20000] [--repeat 7]

Each figure is the best of C{--repeat} timings, in microseconds of CPU
(C{time.process_time}) per frame: the best, because other load on a
shared machine only ever adds time.  To compare two trees, run each
tree's copy from its own root, alternating.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from imageproto import wire

_JPEG = b"\xff\xd8\xff" + os.urandom(63_000) + b"\xff\xd9"
_READ = 180 * 1024
_PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class _Sink:
    """
    A socket that takes every byte it is given.
    """

    def sendmsg(self, parts) -> int:
        return sum(map(len, parts))


class _DirectTcp:
    """
    What the sender's direct path reads of a plain TCP transport holding
    nothing unsent.
    """

    disconnecting = False
    connected = True
    _tempDataLen = 0
    offset = 0
    dataBuffer = b""
    socket = _Sink()


def senderSeconds(frames: int) -> float:
    """
    CPU seconds for C{frames} frames through the embedding API's path.
    """
    from imageproto.sender.embed import FrameStream

    reactor = MemoryReactorClock()
    stream = FrameStream(reactor, "tcp:127.0.0.1:1", "bench")
    protocol = stream.factory.buildProtocol(_PEER)
    protocol.makeConnection(StringTransport(peerAddress=_PEER))
    protocol.dataReceived(
        wire.encodeFramed(wire.Welcome(wire.SCAP_METADATA, 16 * 1024 * 1024, 0))
    )
    protocol._tcp = _DirectTcp()
    sender = stream.sender
    window = sender.window
    acked = [0]

    def ack(_):
        acked[0] += 1

    captureTime = time.time()
    sent = 0
    start = time.process_time()
    while sent < frames:
        first = sent
        while sent < frames and sender.ready:
            stream.send(_JPEG, captureTime).addCallback(ack)
            sent += 1
        # The end of the reactor turn, where queued writes go out.
        reactor.advance(0)
        protocol.dataReceived(wire.encodeAcks(range(first, sent)))
    elapsed = time.process_time() - start
    assert acked[0] == frames, (acked[0], frames)
    return elapsed


def _frameStream(frames: int, first: int) -> list[bytes]:
    """
    C{frames} framed FRAMEs from seq C{first}, as reads of L{_READ} bytes.
    """
    now = time.time()
    data = b"".join(
        wire.encodeFramed(wire.Frame(seq, _JPEG, now, now, 0))
        for seq in range(first, first + frames)
    )
    return [data[i : i + _READ] for i in range(0, len(data), _READ)]


def receiverSeconds(frames: int, statsFile: str, session: int) -> float:
    """
    CPU seconds for C{frames} frames through the receiver's path, from
    reads to ACKs.
    """
    from imageproto.tap.receiver import Options, makeService

    options = Options()
    options.parseOptions(["--port", "tcp:0", "--stats-file", statsFile])
    reactor = MemoryReactorClock()
    receiver = makeService(options, reactor)
    protocol = receiver.factory.buildProtocol(_PEER)
    transport = StringTransport(peerAddress=_PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(wire.encodeFramed(wire.Hello("bench", 0, session)))
    reads = _frameStream(frames, 0)
    transport.clear()
    start = time.process_time()
    for data in reads:
        protocol.dataReceived(data)
    elapsed = time.process_time() - start
    acks = len(transport.value()) // 14
    assert acks == frames, (acks, frames)
    protocol.transport.loseConnection()
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    best = {"sender": float("inf"), "receiver": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            best["sender"] = min(best["sender"], senderSeconds(args.frames))
            stats = os.path.join(tmp, f"stats-{i}.json")
            best["receiver"] = min(best["receiver"], receiverSeconds(args.frames, stats, i + 1))
    print(f"imageproto from {os.path.dirname(wire.__file__)}")
    for side, seconds in best.items():
        print(f"  {side:9} {seconds / args.frames * 1e6:6.2f} us of CPU per frame "
              f"(best of {args.repeat} x {args.frames})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
