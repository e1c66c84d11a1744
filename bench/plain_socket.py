"""
The baseline for C{bench.throughput}: a plain blocking-socket sender and
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


def receive(server: socket.socket, maxBytes: int = 16 * 1024 * 1024) -> dict:
    """
    Accept one sender and read frames until its end marker.

    @return: a summary: C{frames}, C{inOrder} (every seq was the one
        expected), C{latencies} (receive time minus capture time, seconds,
        both from C{time.time()}), C{elapsed} and C{cpu} (seconds, from the
        first frame to the end marker).
    """
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(maxBytes)
    view = memoryview(buf)
    lengthView = memoryview(bytearray(_LENGTH.size))
    frames = 0
    inOrder = True
    latencies = []
    start = cpu0 = None
    while True:
        _readExactly(conn, lengthView, _LENGTH.size)
        (length,) = _LENGTH.unpack(lengthView)
        if length == 0:
            break
        _readExactly(conn, view, length)
        now = time.time()
        if start is None:
            start, cpu0 = time.perf_counter(), _cpu()
        seq, captureTime = _HEADER.unpack_from(buf)
        latencies.append(now - captureTime)
        inOrder = inOrder and seq == frames
        frames += 1
    end, cpu1 = time.perf_counter(), _cpu()
    conn.sendall(_COUNT.pack(frames))
    conn.close()
    return {
        "frames": frames,
        "inOrder": inOrder,
        "latencies": latencies,
        "elapsed": end - start if start else 0.0,
        "cpu": cpu1 - cpu0 if start else 0.0,
    }


def send(port: int, jpegs: list[bytes], frames: int, rate: float = 0.0) -> dict:
    """
    Connect to a L{receive}r on C{port} and send C{frames} frames cycling
    through C{jpegs}: back to back, or C{rate} per second when given.

    @return: C{frames} (sent), C{delivered} (the receiver's count),
        C{elapsed} (first send to the receiver's answer) and C{cpu}.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    interval = 1.0 / rate if rate else 0.0
    start, cpu0 = time.perf_counter(), _cpu()
    for seq in range(frames):
        if interval:
            delay = start + seq * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        jpeg = jpegs[seq % len(jpegs)]
        sock.sendall(
            b"".join(
                [
                    _LENGTH.pack(_HEADER.size + len(jpeg)),
                    _HEADER.pack(seq, time.time()),
                    jpeg,
                ]
            )
        )
    sock.sendall(_LENGTH.pack(0))
    answer = memoryview(bytearray(_COUNT.size))
    _readExactly(sock, answer, _COUNT.size)
    end, cpu1 = time.perf_counter(), _cpu()
    sock.close()
    return {
        "frames": frames,
        "delivered": _COUNT.unpack(answer)[0],
        "elapsed": end - start,
        "cpu": cpu1 - cpu0,
    }
