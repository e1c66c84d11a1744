# -*- test-case-name: tests.test_bus -*-
"""
The worker side of the bus: C{twistd imageproto-worker} runs a detector on
the frames receivers publish, sharing them with every other worker through
one Redis consumer group, and puts each RESULT on the results stream of
the receiver that holds the frame's sender.

Each worker thread runs a L{WorkerLoop}, whose L{WorkerLoop.step} blocks
(Redis calls and the detector) and returns plain counts; L{WorkerService}
calls it again and again through its own thread pool and keeps the totals
on the reactor.  One step:

  1. every second, finds new frame streams (C{imageproto:streams}) and
     creates the consumer group on each (from the stream's start, so frames
     published before any worker ran are not missed);
  2. every C{claimAfter / 2} seconds, claims (XAUTOCLAIM) entries another
     consumer has held for more than C{claimAfter} seconds: that worker
     died mid-frame, or is stuck;
  3. otherwise reads one new entry (XREADGROUP, blocking at most
     C{blockMillis});
  4. a live frame older than C{maxAge} (by the Redis server's clock at
     XADD against this machine's clock) is skipped: the receiver is told,
     and the entry acknowledged unprocessed.  Any other frame goes to the
     detector, and the RESULT is added to the receiver's results stream in
     the same MULTI/EXEC as the XACK of the frame's entry (and its XDEL,
     once every consumer group on the stream has acknowledged it:
     L{keys.ACK_AND_DELETE}), so a
     worker killed before that transaction leaves the frame pending (to be
     claimed), and one killed after it has answered exactly once.

Two workers can still both answer a frame when the first was slow rather
than dead; the receiver answers the sender once and drops the late one.
"""

from __future__ import annotations

import time


from imageproto import wire
from imageproto.features.bus import keys
from imageproto.features.bus.workerconfig import WorkerConfig, defaultName

__all__ = ["WorkerConfig", "WorkerLoop", "WorkerService", "RESULTS_LENGTH", "RESULTS_TTL", "defaultName"]

# Entries kept per results stream (XADD MAXLEN ~) and seconds it outlives
# its last answer: a receiver that went away leaves nothing behind for long.
RESULTS_LENGTH = 10000
RESULTS_TTL = 3600
_U32 = 0xFFFFFFFF


def _isError(e: Exception, code: str) -> bool:
    return str(e).startswith(code)


def _fieldsOf(entry):
    return entry[1] if entry is not None else None


class WorkerLoop:
    """
    One worker thread's loop over the bus; see the module docstring.  Only
    L{step} is called, always from the same kind of thread, never the
    reactor.

    @param client: a redis-py client.
    @param process: C{process(stream, jpeg, annotated)} returns a
        L{imageproto.features.inference.engine.Processed}.
    @param consumer: this loop's consumer name in the group.
    @param now: the clock (C{time.time}).
    @param startId: where a group this loop creates on the streams present
        at its first look starts: C{"0"}, the stream's beginning, or C{"$"},
        new entries only (a viewer's); streams that appear later are read
        from their beginning.
    """

    def __init__(
        self,
        client,
        process,
        consumer: str,
        worker: str,
        group: str = "detect",
        claimAfter: float = 30.0,
        maxAge: float = 2.0,
        now=time.time,
        blockMillis: int = 500,
        discoverEvery: float = 1.0,
        heartbeatEvery: float = 2.0,
        startId: str = "0",
    ) -> None:
        self.client = client
        self.startId = startId
        self.process = process
        self.consumer = consumer
        self.worker = worker
        self.group = group
        self.claimAfter = claimAfter
        self.maxAge = maxAge
        self.now = now
        self.blockMillis = blockMillis
        self.discoverEvery = discoverEvery
        self.heartbeatEvery = heartbeatEvery
        self.keys: list = []
        self._grouped: set = set()
        self._nextDiscover = 0.0
        self._nextClaim = 0.0
        self._nextBeat = 0.0
        self._ackScript = None
        self._discovered = False
        self._keeping: list = []

    def step(self) -> dict:
        """
        Do one round (see the module docstring).

        @return: C{{"processed", "skipped", "claimed", "failed",
            "malformed": counts, "idle": bool, "errors": [text]}}.
        """
        counts = {
            "processed": 0,
            "skipped": 0,
            "claimed": 0,
            "failed": 0,
            "malformed": 0,
            "idle": False,
            "errors": [],
        }
        entries, counts["claimed"] = self.fetch()
        if not entries:
            counts["idle"] = True
        for key, entryId, fields in entries:
            self._handle(key, entryId, fields, counts)
        return counts

    def fetch(self, count: int = 1) -> tuple:
        """
        Steps 1 to 3 of the module docstring: the heartbeat, new streams,
        claims, or up to C{count} new entries.

        @return: C{([(key, entryId, fields), ...], claimed)}.
        """
        now = self.now()
        if now >= self._nextBeat:
            self._nextBeat = now + self.heartbeatEvery
            seconds, micros = self.client.time()
            self.client.hset(keys.WORKERS_KEY, self.worker, repr(seconds + micros / 1e6))
        if now >= self._nextDiscover:
            self._nextDiscover = now + self.discoverEvery
            self._discover()
        if not self.keys:
            return [], 0
        if now >= self._nextClaim:
            self._nextClaim = now + self.claimAfter / 2
            claimed = self._claim(count)
            if claimed:
                return claimed, len(claimed)
        return self._read(count), 0

    def acknowledge(self, key: str, entryId, pipe=None) -> None:
        """
        XACK C{entryId} in this loop's group and XDEL it once every group
        on C{key}, and every group that keeps entries (L{keys.GROUPS_KEY},
        as of the last look), has acknowledged it (L{keys.ACK_AND_DELETE}),
        in C{pipe} when given (a transaction the caller executes).
        """
        script = self._ackScript
        if script is None:
            script = self._ackScript = self.client.register_script(keys.ACK_AND_DELETE)
        args = [self.group, entryId, *self._keeping]
        if pipe is None:
            script(keys=[key], args=args)
        else:
            script(keys=[key], args=args, client=pipe)

    def _discover(self) -> None:
        from redis.exceptions import ResponseError

        if not self.group.startswith(keys.VIEW_GROUP_PREFIX):
            self.client.sadd(keys.GROUPS_KEY, self.group)
        self._keeping = sorted(
            g.decode("utf-8") if isinstance(g, bytes) else g
            for g in self.client.smembers(keys.GROUPS_KEY)
        )
        found = sorted(
            k.decode("utf-8") if isinstance(k, bytes) else k
            for k in self.client.smembers(keys.STREAMS_KEY)
        )
        # startId applies to the streams there when the loop starts; one that
        # appears later is read from its beginning, its first frames too.
        startId = self.startId if not self._discovered else "0"
        self._discovered = True
        for key in found:
            if key in self._grouped:
                continue
            try:
                self.client.xgroup_create(key, self.group, id=startId, mkstream=True)
            except ResponseError as e:
                if not _isError(e, "BUSYGROUP"):
                    raise
            self._grouped.add(key)
        self.keys = found

    def _forgetGroups(self) -> None:
        # Redis lost the group (restarted without persistence): make it again.
        self._grouped.clear()
        self._nextDiscover = 0.0

    def _claim(self, count: int = 16) -> list:
        from redis.exceptions import ResponseError

        claimed = []
        for key in self.keys:
            try:
                reply = self.client.xautoclaim(
                    key,
                    self.group,
                    self.consumer,
                    min_idle_time=int(self.claimAfter * 1000),
                    start_id="0-0",
                    count=max(count, 16),
                )
            except ResponseError as e:
                if _isError(e, "NOGROUP"):
                    self._forgetGroups()
                    continue
                raise
            # [next start, [(id, fields)...], [deleted ids]] (Redis 7).
            for entryId, fields in reply[1]:
                if fields:
                    claimed.append((key, entryId, fields))
        return claimed

    def _read(self, count: int = 1) -> list:
        from redis.exceptions import ResponseError

        try:
            reply = self.client.xreadgroup(
                self.group,
                self.consumer,
                {key: ">" for key in self.keys},
                count=count,
                block=self.blockMillis,
            )
        except ResponseError as e:
            if _isError(e, "NOGROUP"):
                self._forgetGroups()
                return []
            raise
        entries = []
        for key, items in reply or []:
            key = key.decode("utf-8") if isinstance(key, bytes) else key
            for entryId, fields in items:
                entries.append((key, entryId, fields))
        return entries

    def _handle(self, key: str, entryId, fields: dict, counts: dict) -> None:
        try:
            frame = keys.decodeFrame(fields)
        except ValueError as e:
            counts["malformed"] += 1
            counts["errors"].append(f"entry {entryId!r} of {key}: {e}")
            self._finish(key, entryId, None, None)
            return
        if frame.live and self.now() - keys.entryTime(entryId) > self.maxAge:
            counts["skipped"] += 1
            self._finish(key, entryId, frame, keys.skippedFields(frame, self.worker))
            return
        try:
            processed = self.process(frame.stream, frame.jpeg, frame.annotated)
            result = wire.Result(
                frame.seq,
                list(processed.detections),
                min(int(processed.micros), _U32),
                processed.jpeg,
            )
            wire.encodeMessage(result)
        except Exception as e:
            counts["failed"] += 1
            counts["errors"].append(f"frame {frame.seq} of {frame.stream}: {e!r}")
            result = wire.Result(frame.seq)
        counts["processed"] += 1
        self._finish(key, entryId, frame, keys.resultFields(frame, result, self.worker))

    def _finish(self, key: str, entryId, frame, answer: dict | None) -> None:
        pipe = self.client.pipeline(transaction=True)
        if answer is not None:
            results = keys.resultsKey(frame.receiver)
            pipe.xadd(results, answer, maxlen=RESULTS_LENGTH, approximate=True)
            pipe.expire(results, RESULTS_TTL)
        self.acknowledge(key, entryId, pipe)
        pipe.execute()


# The service that runs WorkerLoops, named here too.
from imageproto.features.bus.workerservice import WorkerService  # noqa: E402
