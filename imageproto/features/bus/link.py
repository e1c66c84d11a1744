# -*- test-case-name: tests.test_bus_redis -*-
"""
The bus's blocking Redis calls, with redis-py (and hiredis).

Every function here blocks and is called in a thread of the bus's own
L{ThreadPool}, never on the reactor (see L{RedisLink}); it takes and returns
plain values.  redis-py's client is thread-safe (a connection pool), so
the publisher, the answer reader and the monitor share one.
"""

from __future__ import annotations

from functools import partial

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from imageproto.features.bus import keys

__all__ = ["connect", "RedisLink", "checkUrl", "BusUnavailable"]


class BusUnavailable(Exception):
    """
    redis-py is not installed.
    """


def checkUrl(url: str) -> str:
    """
    Check a C{redis://}, C{rediss://} or C{unix://} URL without connecting.

    @raise ValueError: naming what is wrong.
    """
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"--bus {url!r}: the URL must start with redis://, rediss:// or unix://")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ValueError(f"--bus {url!r}: no host")
    try:
        parsed.port
    except ValueError as e:
        raise ValueError(f"--bus {url!r}: {e}") from None
    return url


def connect(url: str):
    """
    A redis-py client for C{url} that fails fast (the bus retries on its
    own schedule): 2 s to connect, 10 s per reply, no retries of its own.
    """
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise BusUnavailable(
            "--bus needs redis-py: pip install 'imageproto[bus]'"
        ) from None
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=10.0,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=15,
    )


class RedisLink:
    """
    The bus's client and the threads its calls run in.

    @param client: a redis-py client (from L{connect}).
    @param threads: one per loop that may block at once (publishing,
        reading answers, the monitor, the leases).
    @ivar runInThread: C{f(callable, *args) -> Deferred}.
    """

    def __init__(self, reactor, client, threads: int = 4, name: str = "bus") -> None:
        self.client = client
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name=name)
        self.runInThread = partial(deferToThreadPool, reactor, self.pool)

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()
        self.client.close()

    def publish(self, entries: list):
        """
        Add C{entries}, C{(key, fields, maxlen or None)}, in one round trip,
        and the keys to L{keys.STREAMS_KEY}.

        @return: a Deferred of the entry IDs, in order.
        """
        return self.runInThread(publish, self.client, entries)

    def readAnswers(self, key: str, after: bytes, blockMillis: int):
        return self.runInThread(readAnswers, self.client, key, after, blockMillis)

    def observe(self, receiverKey: str):
        return self.runInThread(observe, self.client, receiverKey)


def publish(client, entries: list) -> list:
    pipe = client.pipeline(transaction=False)
    streams = sorted({key for key, _, _ in entries})
    for key, fields, maxlen in entries:
        if maxlen is None:
            pipe.xadd(key, fields)
        else:
            pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
    pipe.sadd(keys.STREAMS_KEY, *streams)
    return pipe.execute()[: len(entries)]


def readAnswers(client, key: str, after: bytes, blockMillis: int) -> list:
    """
    Up to 256 entries of C{key} after ID C{after}, waiting at most
    C{blockMillis} for the first: C{[(id, fields), ...]}.
    """
    reply = client.xread({key: after}, count=256, block=blockMillis)
    if not reply:
        return []
    return reply[0][1]


def observe(client, resultsKey: str, workerHorizon: float = 10.0) -> dict:
    """
    What the monitor reports: per frame stream its length and, per consumer
    group, pending entries and the oldest one's age; the workers that sent
    a heartbeat in the last C{workerHorizon} seconds; the results stream's
    length.  Ages use the Redis server's clock.
    """
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    streams = {}
    for key in sorted(client.smembers(keys.STREAMS_KEY)):
        try:
            name = keys.streamOfKey(key)
        except ValueError:
            continue
        length = client.xlen(key)
        groups = {}
        if length or client.exists(key):
            try:
                infos = client.xinfo_groups(key)
            except Exception:
                infos = []
            for info in infos:
                group = info["name"]
                group = group.decode() if isinstance(group, bytes) else group
                summary = client.xpending(key, group)
                oldest = summary.get("min")
                groups[group] = {
                    "pending": int(summary.get("pending", 0)),
                    "oldest_pending_age_s": (
                        None if not oldest else round(max(0.0, now - keys.entryTime(oldest)), 3)
                    ),
                    "lag": info.get("lag"),
                    "consumers": int(info.get("consumers", 0)),
                }
        streams[name] = {"length": length, "groups": groups}
    workers = {}
    for worker, seen in client.hgetall(keys.WORKERS_KEY).items():
        seen = float(seen)
        if now - seen <= workerHorizon:
            workers[worker.decode("utf-8", "replace")] = round(now - seen, 3)
    return {
        "streams": streams,
        "workers": workers,
        "results_length": client.xlen(resultsKey),
    }
