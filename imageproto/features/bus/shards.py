# -*- test-case-name: tests.test_bus -*-
"""
Spreading the bus over several Redis servers by stream name.

C{--bus URL1,URL2,...} names several independent Redis servers (shards).
A stream's frames all go to one of them, chosen by a stable hash of its
name: the Redis Cluster key slot of its frames key (CRC16/XMODEM of the
hash tag, modulo 16384; L{keySlot}), modulo the number of servers
(L{shardOf}).  Every receiver and every worker given the same list, in the
same order, therefore agrees on where a stream lives without talking to
one another.

A worker answers a frame on the server the frame came from, so a
receiver's results stream exists on every server (each receiver reads all
of them), and each worker reads the frame streams of every server (one
L{imageproto.features.bus.worker.WorkerService} per server).

L{ShardedPublish} is the receiver's C{publish} over several
L{imageproto.features.bus.link.RedisLink}s: one batch of the publisher is
split by server and sent to each in parallel; the batch succeeds when every
part did.  When one server fails, the whole batch is retried, so the parts
that reached a healthy server are published twice: a worker may answer
such a frame twice, and the receiver answers the sender once (as after
any republish).

Only plain independent servers are handled here; a Redis Cluster's own
client (redirections, slot maps) is not used.
"""

from __future__ import annotations

from twisted.internet.defer import gatherResults

from imageproto.features.bus import keys

__all__ = ["SLOTS", "crc16", "keySlot", "shardOf", "splitUrls", "ShardedPublish"]

# Redis Cluster's number of hash slots.
SLOTS = 16384


def crc16(data: bytes) -> int:
    """
    CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis
    Cluster hashes keys with.
    """
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def keySlot(key: str | bytes) -> int:
    """
    The Redis Cluster hash slot of C{key}: only the part between the first
    C{{} and the next C{}} is hashed when that part is not empty.
    """
    if isinstance(key, str):
        key = key.encode("utf-8")
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % SLOTS


def shardOf(stream: str, count: int) -> int:
    """
    The index, among C{count} servers, of the server that carries stream
    C{stream}'s frames.
    """
    return keySlot(keys.framesKey(stream)) % count


def splitUrls(value: str) -> list[str]:
    """
    The Redis URLs of a C{--bus} value: one URL, or several separated by
    commas.
    """
    return [part.strip() for part in value.split(",") if part.strip()]


class ShardedPublish:
    """
    The publisher's C{publish} over several links (see the module
    docstring).

    @param links: one L{imageproto.features.bus.link.RedisLink} (or anything
        with its C{publish}) per server, in the order of C{--bus}.
    """

    def __init__(self, links: list) -> None:
        self.links = list(links)

    def __call__(self, entries: list):
        """
        Publish C{entries}, C{(key, fields, maxlen)}, each on its stream's
        server.

        @return: a Deferred of the entry IDs, in the order of C{entries}.
        """
        parts: dict[int, list] = {}
        for position, entry in enumerate(entries):
            stream = keys.streamOfKey(entry[0])
            parts.setdefault(shardOf(stream, len(self.links)), []).append((position, entry))
        order = sorted(parts)
        calls = [self.links[i].publish([entry for _, entry in parts[i]]) for i in order]

        def merge(replies):
            ids = [None] * len(entries)
            for i, reply in zip(order, replies):
                for (position, _), entryId in zip(parts[i], reply):
                    ids[position] = entryId
            return ids

        d = gatherResults(calls, consumeErrors=True)
        d.addCallback(merge)
        # Report the first server's error as publishing does for one.
        d.addErrback(lambda f: f.value.subFailure if hasattr(f.value, "subFailure") else f)
        return d
