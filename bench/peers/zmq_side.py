# -*- test-case-name: tests.test_bench_peers -*-
"""
The imagezmq and NetGear ends of C{bench.peers}, each written the way its
own documentation and examples use it (our code, not theirs):

  - imagezmq REQ/REP: C{ImageSender(connect_to=...)} and
    C{ImageHub(open_port=...)}; C{send_jpg(name, jpg)} blocks for the hub's
    C{send_reply(b"OK")}.  The message carries C{"name|seq"}.
  - imagezmq PUB/SUB: each sender binds a PUB (C{REQ_REP=False}), the hub's
    SUB connects to every sender (C{ImageHub(...)} then C{connect(...)}), no
    replies; whatever ZeroMQ's high-water marks drop is counted lost.  PUB
    sends before the subscription has arrived are dropped too ("slow
    joiner"), so each sender sends C{seq -1} warm-up messages until the hub
    has seen one (a file in C{--ready-dir}), and only then its frames.
  - NetGear: C{NetGear(address, port, receive_mode=...)} with its default
    pattern (0, PAIR; every C{send} waits for the client's confirmation);
    for several senders its multi-server mode, which needs pattern 1
    (REQ/REP).  C{send} takes numpy arrays only: for transport scenarios
    the JPEG bytes go as a 1-D C{uint8} array with C{jpeg_compression=False};
    for S2/S3 NetGear compresses itself (its default, simplejpeg, quality
    90, fast DCT) and its receive thread decodes before C{recv} returns.
    The sender waits for the receiver's file in C{--ready-dir} before
    C{close()}: NetGear's C{recv} returns C{None} once the terminate flag has
    arrived, even with frames still queued.

S2/S3 senders other than NetGear encode with C{cv2.imencode} q90 and the
receivers decode with C{cv2.imdecode}, as imagezmq's examples do.
"""

from __future__ import annotations

import os
import time

from bench.peers.common import (
    Pacer,
    cpuSeconds,
    decodeJpeg,
    emit,
    encodeJpeg,
    loadFrames,
    peakKiB,
)

__all__ = [
    "runImagezmqSender",
    "runImagezmqReceiver",
    "runNetGearSender",
    "runNetGearReceiver",
]

_TIMEOUT_MS = 2000


def _endpointPort(sock) -> int:
    import zmq

    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def _touch(directory: str, name: str) -> None:
    with open(os.path.join(directory, name), "w"):
        pass


def _waitFor(directory: str, name: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(directory, name)):
            return True
        time.sleep(0.005)
    return False


def runImagezmqSender(args) -> None:
    import imagezmq
    import zmq

    frames = loadFrames(args.data, args.frameset, images=args.encode)
    pubsub = args.peer == "imagezmq PUB/SUB"
    if pubsub:
        sender = imagezmq.ImageSender(connect_to="tcp://127.0.0.1:*", REQ_REP=False)
        emit({"port": _endpointPort(sender.zmq_socket)})
        # Warm up until the hub has subscribed (bounded).
        warm = b"\xff\xd8\xff\xd9"
        deadline = time.monotonic() + 15
        while not os.path.exists(os.path.join(args.ready_dir, args.name)):
            if time.monotonic() > deadline:
                emit({"error": "the hub never subscribed"})
                return
            sender.send_jpg(f"{args.name}|-1", warm)
            time.sleep(0.005)
    else:
        sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{args.port}")
        # As imagezmq's timeout example does: never block forever on a reply.
        sender.zmq_socket.setsockopt(zmq.RCVTIMEO, _TIMEOUT_MS)
    sender.zmq_socket.setsockopt(zmq.LINGER, 10_000)
    captures = []
    total = sent = 0
    pacer = Pacer(args.rate)
    deadline = time.monotonic() + args.deadline
    start, cpu0 = time.time(), cpuSeconds()
    error = None
    for seq in range(args.frames):
        if time.monotonic() > deadline:
            break
        pacer.wait(seq)
        captureTime = time.time()
        frame = frames[seq % len(frames)]
        jpg = encodeJpeg(frame) if args.encode else frame
        try:
            sender.send_jpg(f"{args.name}|{seq}", jpg)
        except zmq.Again:
            error = f"no reply to frame {seq} within {_TIMEOUT_MS} ms"
            break
        captures.append(captureTime)
        total += len(jpg)
        sent += 1
    end = time.time()
    cpu = cpuSeconds() - cpu0
    if pubsub:
        for _ in range(10):
            sender.send_jpg(f"{args.name}|end", b"")
            time.sleep(0.01)
    emit(
        {
            "sent": sent,
            "start": start,
            "end": end,
            "cpu": cpu,
            "hwm": peakKiB(),
            "bytes": total,
            "captures": captures if args.rate else [],
            **({"error": error} if error else {}),
        }
    )
    # close() lingers (bounded above) until PUB has handed over its queue.
    sender.close()


def runImagezmqReceiver(args) -> None:
    import imagezmq
    import zmq

    pubsub = args.peer == "imagezmq PUB/SUB"
    if pubsub:
        ports = [int(p) for p in args.ports.split(",")]
        hub = imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{ports[0]}", REQ_REP=False)
        for port in ports[1:]:
            hub.connect(f"tcp://127.0.0.1:{port}")
    else:
        hub = imagezmq.ImageHub(open_port="tcp://127.0.0.1:*")
        emit({"port": _endpointPort(hub.zmq_socket)})
    hub.zmq_socket.setsockopt(zmq.RCVTIMEO, 500)
    seen = set()
    ready = set()
    ended = set()
    arrivals = []
    state = {"bytes": 0, "last": 0.0}
    deadline = time.monotonic() + args.deadline
    idleSince = None
    cpu0 = None
    while len(seen) < args.expect and time.monotonic() < deadline:
        try:
            msg, jpg = hub.recv_jpg()
        except zmq.Again:
            if seen and pubsub:
                idleSince = idleSince or time.monotonic()
                if time.monotonic() - idleSince > 3:
                    break
            continue
        idleSince = None
        name, _, seq = msg.rpartition("|")
        if seq == "-1":
            if name not in ready:
                ready.add(name)
                _touch(args.ready_dir, name)
            continue
        if seq == "end":
            ended.add(name)
            if len(ended) == args.senders:
                break
            continue
        if cpu0 is None:
            cpu0 = cpuSeconds()
        if args.encode:
            decodeJpeg(jpg)
        now = time.time()
        if not pubsub:
            hub.send_reply(b"OK")
        key = (name, int(seq))
        if key not in seen:
            seen.add(key)
            state["bytes"] += len(jpg)
        state["last"] = now
        arrivals.append((int(seq), now))
    emit(
        {
            "received": len(seen),
            "bytes": state["bytes"],
            "last": state["last"],
            "cpu": cpuSeconds() - cpu0 if cpu0 is not None else 0.0,
            "hwm": peakKiB(),
            "arrivals": arrivals,
        }
    )
    hub.close()


def _netGearOptions(args) -> dict:
    options = {"jpeg_compression": bool(args.encode)}
    if args.encode:
        options["jpeg_compression_quality"] = 90
    if args.senders > 1:
        options["multiserver_mode"] = True
    return options


def runNetGearSender(args) -> None:
    import numpy
    from vidgear.gears import NetGear

    frames = loadFrames(args.data, args.frameset, images=args.encode)
    if not args.encode:
        frames = [numpy.frombuffer(f, numpy.uint8) for f in frames]
    server = NetGear(
        address="127.0.0.1",
        port=str(args.port),
        protocol="tcp",
        pattern=1 if args.senders > 1 else 0,
        logging=False,
        **_netGearOptions(args),
    )
    captures = []
    total = sent = 0
    pacer = Pacer(args.rate)
    deadline = time.monotonic() + args.deadline
    start, cpu0 = time.time(), cpuSeconds()
    for seq in range(args.frames):
        if time.monotonic() > deadline:
            break
        pacer.wait(seq)
        captures.append(time.time())
        frame = frames[seq % len(frames)]
        server.send(frame)
        total += frame.nbytes
        sent += 1
    end = time.time()
    cpu = cpuSeconds() - cpu0
    emit(
        {
            "sent": sent,
            "start": start,
            "end": end,
            "cpu": cpu,
            "hwm": peakKiB(),
            "bytes": 0 if args.encode else total,
            "captures": captures if args.rate else [],
        }
    )
    _waitFor(args.ready_dir, "done", 10)
    server.close()


def runNetGearReceiver(args) -> None:
    from vidgear.gears import NetGear

    multi = args.senders > 1
    ports = args.ports.split(",")
    client = NetGear(
        address="127.0.0.1",
        port=ports if multi else ports[0],
        protocol="tcp",
        pattern=1 if multi else 0,
        receive_mode=True,
        logging=False,
        **_netGearOptions(args),
    )
    emit({"port": int(ports[0])})
    arrivals = []
    received = total = 0
    last = 0.0
    cpu0 = None
    deadline = time.monotonic() + args.deadline
    while received < args.expect and time.monotonic() < deadline:
        frame = client.recv()
        if frame is None:
            break
        if multi:
            _, frame = frame
        if cpu0 is None:
            cpu0 = cpuSeconds()
        last = time.time()
        # NetGear carries no per-frame metadata in this pattern: frames
        # arrive in order and unlost (every send waits for its reply).
        arrivals.append((received, last))
        received += 1
        total += frame.nbytes
    if args.encode:
        # recv() gave decoded images; the JPEG sizes stay inside NetGear.
        total = None
    _touch(args.ready_dir, "done")
    emit(
        {
            "received": received,
            "bytes": total,
            "last": last,
            "cpu": cpuSeconds() - cpu0 if cpu0 is not None else 0.0,
            "hwm": peakKiB(),
            "arrivals": arrivals,
        }
    )
    client.close()
