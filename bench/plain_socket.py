"""
The baseline for C{bench.throughput} and C{bench.peers}: a plain blocking-socket sender and
receiver, no Twisted, one message per frame.

Each message is a 4-byte big-endian length, then a 16-byte header (u64 seq,
f64 capture time from C{time.time()}), then the JPEG bytes.  A zero length
marks the end of the run; the receiver answers it with the u64 count of
frames it read, so the sender's clock covers delivery, not only C{sendall}.

Both ends set C{TCP_NODELAY}, as imageproto's protocols do, and write each
message with one C{sendall}, so neither end waits on Nagle's algorithm.  The
receiver reads with C{recv_into} into a reused buffer: the strongest simple
baseline, not a strawman.
"""

from __future__ import annotations

import os
import socket
import struct
import time

__all__ = ["listen", "receive", "send"]

_LENGTH = struct.Struct("!I")
_HEADER = struct.Struct("!Qd")
_COUNT = struct.Struct("!Q")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def listen() -> socket.socket:
    """
    A listening socket on a free loopback port.
    """
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server


def _readExactly(sock: socket.socket, view: memoryview, size: int) -> None:
    got = 0
    while got < size:
        n = sock.recv_into(view[got:size])
        if n == 0:
            raise ConnectionError(f"peer closed after {got} of {size} bytes")
        got += n


def receive(
    server: socket.socket,
    maxBytes: int = 16 * 1024 * 1024,
    decode=None,
    connections: int = 1,
) -> dict:
    """
    Accept C{connections} senders and read frames until each one's end
    marker; several connections are read by one thread each.

    @param decode: when given, called with each frame's JPEG bytes (a
        C{memoryview}) before its arrival time is taken.
    @return: a summary: C{frames}, C{inOrder} (every seq was the one
        expected on its connection), C{latencies} (receive time minus
        capture time, seconds, both from C{time.time()}), C{arrivals}
        (C{(seq, time.time())} per frame), C{first} and C{last} (wall times
        of the first and last frame), C{bytes} (JPEG bytes), C{elapsed} and
        C{cpu} (seconds, from the first frame to the last end marker).
    """
    conns = []
    for _ in range(connections):
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(conn)
    results = [None] * connections
    began = {}

    def read(i):
        results[i] = _receiveOne(conns[i], maxBytes, decode, began)

    if connections == 1:
        read(0)
    else:
        import threading

        threads = [threading.Thread(target=read, args=(i,)) for i in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    end, cpu1 = time.perf_counter(), _cpu()
    for conn, r in zip(conns, results):
        conn.sendall(_COUNT.pack(r["frames"]))
        conn.close()
    start = began.get("start")
    return {
        "frames": sum(r["frames"] for r in results),
        "inOrder": all(r["inOrder"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "arrivals": [x for r in results for x in r["arrivals"]],
        "bytes": sum(r["bytes"] for r in results),
        "first": min((r["first"] for r in results if r["first"]), default=0.0),
        "last": max(r["last"] for r in results),
        "elapsed": end - start if start else 0.0,
        "cpu": cpu1 - began["cpu0"] if start else 0.0,
    }


def _receiveOne(conn, maxBytes: int, decode, began: dict) -> dict:
    buf = bytearray(maxBytes)
    view = memoryview(buf)
    lengthView = memoryview(bytearray(_LENGTH.size))
    frames = total = 0
    inOrder = True
    latencies = []
    arrivals = []
    first = last = 0.0
    while True:
        _readExactly(conn, lengthView, _LENGTH.size)
        (length,) = _LENGTH.unpack(lengthView)
        if length == 0:
            break
        _readExactly(conn, view, length)
        if not began:
            began.update(start=time.perf_counter(), cpu0=_cpu())
        if decode is not None:
            decode(view[_HEADER.size : length])
        now = time.time()
        first = first or now
        last = now
        seq, captureTime = _HEADER.unpack_from(buf)
        latencies.append(now - captureTime)
        arrivals.append((seq, now))
        inOrder = inOrder and seq == frames
        frames += 1
        total += length - _HEADER.size
    return {
        "frames": frames,
        "inOrder": inOrder,
        "latencies": latencies,
        "arrivals": arrivals,
        "bytes": total,
        "first": first,
        "last": last,
    }


def send(
    port: int,
    jpegs: list,
    frames: int,
    rate: float = 0.0,
    encode=None,
    keepCaptures: bool = False,
) -> dict:
    """
    Connect to a L{receive}r on C{port} and send C{frames} frames cycling
    through C{jpegs}: back to back, or C{rate} per second when given.

    @param encode: when given, C{jpegs} are images and each frame is
        C{encode(image)}, called after the capture time is taken.
    @param keepCaptures: also return C{captures}, each frame's capture time.
    @return: C{frames} (sent), C{delivered} (the receiver's count),
        C{elapsed} (first send to the receiver's answer), C{cpu}, C{start}
        and C{end} (the same span in C{time.time()}) and C{bytes}.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    interval = 1.0 / rate if rate else 0.0
    captures = []
    total = 0
    wallStart = time.time()
    start, cpu0 = time.perf_counter(), _cpu()
    for seq in range(frames):
        if interval:
            delay = start + seq * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        captureTime = time.time()
        jpeg = jpegs[seq % len(jpegs)]
        if encode is not None:
            jpeg = encode(jpeg)
        if keepCaptures:
            captures.append(captureTime)
        total += len(jpeg)
        sock.sendall(
            b"".join(
                [
                    _LENGTH.pack(_HEADER.size + len(jpeg)),
                    _HEADER.pack(seq, captureTime),
                    jpeg,
                ]
            )
        )
    sock.sendall(_LENGTH.pack(0))
    answer = memoryview(bytearray(_COUNT.size))
    _readExactly(sock, answer, _COUNT.size)
    end, cpu1 = time.perf_counter(), _cpu()
    sock.close()
    result = {
        "frames": frames,
        "delivered": _COUNT.unpack(answer)[0],
        "elapsed": end - start,
        "cpu": cpu1 - cpu0,
        "start": wallStart,
        "end": wallStart + (end - start),
        "bytes": total,
    }
    if keepCaptures:
        result["captures"] = captures
    return result
