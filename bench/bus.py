"""
The bus's per-frame publish path with the two Redis clients it could use.

Run from the checkout's root (with the C{bus} extra and txredisapi)::

    .venv/bin/python -m bench.bus [--frames 3000] [--repeat 3] [--size 60000]

Starts its own C{redis-server} (loopback, free port, persistence off) and,
for each repetition, alternating which goes first, publishes C{--frames}
XADDs of a C{--size} byte JPEG-like payload plus the fields the publisher
writes (stream, session, seq, three times, receiver id, live) to
C{imageproto:frames:{bench}} (trimmed with MAXLEN ~ 1000):

  - C{redis-py}: redis-py with hiredis, every call in one dedicated thread
    through C{deferToThreadPool}, as the publisher runs it;
      - C{serial}: one XADD per round trip (the latency of one frame);
      - C{batched}: the frames that are waiting go as one pipeline (the
        publisher's way: up to 32 per round trip, 8 frames outstanding per
        sender window, so batches of up to 32);
  - C{txredisapi}: Twisted-native, C{execute_command("XADD", ...)} on the
    reactor;
      - C{serial}: one at a time;
      - C{batched}: 32 commands outstanding at once (its connection
        pipelines them).

Prints one JSON line per run and a summary: frames/s, mean and p99
per-frame latency (enqueue to reply), CPU seconds of this process per
1000 frames, and each figure as a ratio to redis-py serial in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial

from imageproto.common.numbers import percentile

__all__ = ["main"]

_FIELDS = {
    "stream": "bench",
    "session": "12345",
    "captureTime": "1700000000.1",
    "sendTime": "1700000000.2",
    "receiveTime": "1700000000.3",
    "receiver": "bench-receiver",
    "live": "0",
}
_KEY = "imageproto:frames:{bench}"
_BATCH = 32


def _cpu() -> float:
    t = os.times()
    return t.user + t.system



def _runRedisPy(reactor, url, frames, payload, batched):
    import redis
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    client = redis.Redis.from_url(url)
    pool = ThreadPool(minthreads=1, maxthreads=1, name="bench-bus")
    pool.start()
    run = partial(deferToThreadPool, reactor, pool)
    latencies = []

    def one(seq):
        fields = dict(_FIELDS, seq=str(seq), jpeg=payload)
        return client.xadd(_KEY, fields, maxlen=1000, approximate=True)

    def many(seqs):
        pipe = client.pipeline(transaction=False)
        for seq in seqs:
            pipe.xadd(_KEY, dict(_FIELDS, seq=str(seq), jpeg=payload), maxlen=1000, approximate=True)
        return pipe.execute()

    @inlineCallbacks
    def go():
        seq = 0
        while seq < frames:
            if batched:
                seqs = list(range(seq, min(frames, seq + _BATCH)))
                started = time.perf_counter()
                yield run(many, seqs)
                latencies.extend([time.perf_counter() - started] * len(seqs))
                seq += len(seqs)
            else:
                started = time.perf_counter()
                yield run(one, seq)
                latencies.append(time.perf_counter() - started)
                seq += 1

    try:
        yield_ = go()
        return yield_, latencies, lambda: (pool.stop(), client.close())
    except Exception:
        pool.stop()
        raise


def _runTx(reactor, url, frames, payload, batched):
    import txredisapi
    from twisted.internet.defer import DeferredList, inlineCallbacks
    from urllib.parse import urlparse

    parsed = urlparse(url)
    latencies = []
    holder = {}

    def xadd(conn, seq):
        args = [_KEY, "MAXLEN", "~", "1000", "*"]
        for k, v in dict(_FIELDS, seq=str(seq)).items():
            args += [k, v]
        args += ["jpeg", payload]
        started = time.perf_counter()
        d = conn.execute_command("XADD", *args)
        d.addCallback(lambda r: latencies.append(time.perf_counter() - started))
        return d

    @inlineCallbacks
    def go():
        conn = holder["conn"] = yield txredisapi.Connection(
            parsed.hostname, parsed.port, dbid=0, reconnect=False, convertNumbers=False
        )
        seq = 0
        while seq < frames:
            if batched:
                seqs = range(seq, min(frames, seq + _BATCH))
                yield DeferredList([xadd(conn, s) for s in seqs], fireOnOneErrback=True)
                seq += len(seqs)
            else:
                yield xadd(conn, seq)
                seq += 1

    return go(), latencies, lambda: holder["conn"].disconnect()


def _measure(reactor, runner, url, frames, payload, batched):
    from twisted.internet.defer import inlineCallbacks

    @inlineCallbacks
    def measured():
        cpu0, wall0 = _cpu(), time.perf_counter()
        d, latencies, close = runner(reactor, url, frames, payload, batched)
        yield d
        wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        result = close()
        if hasattr(result, "addCallback"):
            yield result
        return {
            "fps": frames / wall,
            "latency_ms_mean": 1000 * statistics.mean(latencies),
            "latency_ms_p99": 1000 * percentile(latencies, 0.99),
            "cpu_s_per_1000": 1000 * cpu / frames,
        }

    return measured()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=60000)
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks

    from imageproto.features.bus.redisserver import RedisServer

    server = RedisServer()
    server.start()
    payload = b"\xff\xd8\xff\xe0" + os.urandom(args.size - 6) + b"\xff\xd9"
    kinds = [
        ("redis-py", "serial", _runRedisPy, False),
        ("redis-py", "batched", _runRedisPy, True),
        ("txredisapi", "serial", _runTx, False),
        ("txredisapi", "batched", _runTx, True),
    ]
    runs = {f"{c} {m}": [] for c, m, _, _ in kinds}

    @inlineCallbacks
    def go():
        try:
            for repetition in range(args.repeat):
                order = kinds if repetition % 2 == 0 else list(reversed(kinds))
                for client, mode, runner, batched in order:
                    figures = yield _measure(
                        reactor, runner, server.url, args.frames, payload, batched
                    )
                    runs[f"{client} {mode}"].append(figures)
                    print(json.dumps(dict(run=repetition, client=client, mode=mode, **{
                        k: round(v, 3) for k, v in figures.items()})), flush=True)
        finally:
            reactor.stop()

    reactor.callWhenRunning(go)
    try:
        reactor.run()
    finally:
        server.cleanup()
    base = {k: statistics.median(r[k] for r in runs["redis-py serial"])
            for k in runs["redis-py serial"][0]}
    print(f"median of {args.repeat} runs, {args.frames} frames of {args.size} bytes; "
          "ratio to redis-py serial in brackets")
    for name, figures in runs.items():
        med = {k: statistics.median(r[k] for r in figures) for k in figures[0]}
        print(f"  {name:20s} " + "  ".join(
            f"{k} {med[k]:9.3f} ({med[k] / base[k]:.2f}x)" for k in med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
