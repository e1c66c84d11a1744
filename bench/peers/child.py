# -*- test-case-name: tests.test_bench_peers -*-
"""
The sender and receiver processes of C{bench.peers}: one per process, run
as C{python -m bench.peers.child --peer P --side sender|receiver ...} by
L{bench.peers.run}.  Each prints JSON lines: optionally C{{"port": N}} once
it listens, then its result.  Every loop is bounded by C{--deadline}.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import plain_socket
from bench.peers.common import (
    decodeJpeg,
    emit,
    encodeJpeg,
    loadFrames,
    peakKiB,
    warmCodecs,
)

# Large enough for any test frame (1280x720 is ~180 KB); plain_socket's
# default 16 MiB buffer per connection would dominate S4's peak memory.
_MAX_BYTES = 2 * 1024 * 1024

__all__ = ["main"]


def _plainSender(args) -> None:
    frames = loadFrames(args.data, args.frameset, images=args.encode)
    r = plain_socket.send(
        args.port, frames, args.frames, args.rate,
        encode=encodeJpeg if args.encode else None, keepCaptures=bool(args.rate),
    )  # fmt: skip
    emit(
        {
            "sent": r["frames"],
            "delivered": r["delivered"],
            "start": r["start"],
            "end": r["end"],
            "cpu": r["cpu"],
            "hwm": peakKiB(),
            "bytes": r["bytes"],
            "captures": r.get("captures", []),
        }
    )


def _plainReceiver(args) -> None:
    server = plain_socket.listen()
    server.listen(args.senders)
    server.settimeout(args.deadline)
    emit({"port": server.getsockname()[1]})
    r = plain_socket.receive(
        server, _MAX_BYTES, decode=decodeJpeg if args.encode else None,
        connections=args.senders,
    )  # fmt: skip
    emit(
        {
            "received": r["frames"],
            "inOrder": r["inOrder"],
            "bytes": r["bytes"],
            "last": r["last"],
            "cpu": r["cpu"],
            "hwm": peakKiB(),
            "arrivals": r["arrivals"] if args.rate else [],
        }
    )


def _roles():
    from bench.peers import imageproto_side, zmq_side

    return {
        ("plain", "sender"): _plainSender,
        ("plain", "receiver"): _plainReceiver,
        ("imageproto", "sender"): imageproto_side.runSender,
        ("imageproto", "receiver"): imageproto_side.runDecodingReceiver,
        ("imageproto.connect", "sender"): imageproto_side.runConnectSender,
        ("imageproto.connect", "receiver"): imageproto_side.runDecodingReceiver,
        ("imagezmq REQ/REP", "sender"): zmq_side.runImagezmqSender,
        ("imagezmq REQ/REP", "receiver"): zmq_side.runImagezmqReceiver,
        ("imagezmq PUB/SUB", "sender"): zmq_side.runImagezmqSender,
        ("imagezmq PUB/SUB", "receiver"): zmq_side.runImagezmqReceiver,
        ("NetGear", "sender"): zmq_side.runNetGearSender,
        ("NetGear", "receiver"): zmq_side.runNetGearReceiver,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.child")
    add = parser.add_argument
    add("--peer", required=True)
    add("--side", choices=("sender", "receiver"), required=True)
    add("--data", help="the frames' directory")
    add("--frameset", default="640")
    add("--encode", action="store_true", help="encode at the sender, decode at the receiver")
    add("--frames", type=int, default=0, help="frames this sender sends")
    add("--expect", type=int, default=0, help="frames the receiver waits for")
    add("--rate", type=float, default=0.0)
    add("--senders", type=int, default=1)
    add("--name", default="bench")
    add("--port", type=int)
    add("--ports", help="comma-separated ports (PUB/SUB and NetGear receivers)")
    add("--ready-dir", help="where senders and receivers leave marker files")
    add("--deadline", type=float, default=60.0, help="seconds before giving up")
    add("--profile", help="write a cProfile of this process here")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    role = _roles()[(args.peer, args.side)]
    if args.encode:
        warmCodecs(args.data, netGear=args.peer == "NetGear")
    if args.profile:
        import cProfile

        # The main thread's CPU time, not wall time: on a shared machine
        # wall time counts the turns the process waited for a core.
        profiler = cProfile.Profile(time.thread_time)
        try:
            profiler.runcall(role, args)
        finally:
            profiler.dump_stats(args.profile)
    else:
        role(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
