# -*- test-case-name: tests.test_bus -*-
"""
The bus's Redis key layout and entry encoding: plain data, no Redis client,
no Twisted.

Keys (C{PREFIX} is C{imageproto}):

  - C{imageproto:frames:{<stream>}}: a Redis Stream per stream name, one
    entry per accepted frame (L{frameFields}).  The name sits in a hash tag
    so that a Cluster places each stream's key by its name alone.
  - C{imageproto:results:<receiverId>}: a Redis Stream per receiver, one
    entry per answered (or skipped) frame (L{resultFields}); the receiver
    that holds the sender's connection reads it.
  - C{imageproto:streams}: a set of the frame stream keys, so that workers
    find new streams.
  - C{imageproto:workers}: a hash, worker name to its last heartbeat (unix
    time, seconds).
  - C{imageproto:lease:{<stream>}}: a string, the C{<receiverId>:<n>} of
    the one connection that holds the stream name across all receivers
    (L{leaseKey}), with a TTL its receiver renews.
  - C{imageproto:groups}: a set of the consumer groups that keep entries
    (every group but viewers'), so that an entry is not deleted before a
    group that has not yet made itself on a new stream read it.

An entry of a frames stream is read by every consumer group on it (the
detectors' C{detect}, and the worker-side consumers' C{save}, C{record},
C{view}, C{stats}); each group acknowledges it with L{ACK_AND_DELETE},
which deletes the entry only once every group has acknowledged it.

Entry IDs are Redis's own (C{<milliseconds>-<n>}, the server's clock at
XADD): L{entryTime} reads the milliseconds back, for ages.
"""

from __future__ import annotations

from attrs import field, frozen

from imageproto import wire

__all__ = [
    "PREFIX",
    "STREAMS_KEY",
    "WORKERS_KEY",
    "GROUPS_KEY",
    "framesKey",
    "resultsKey",
    "leaseKey",
    "streamOfKey",
    "entryTime",
    "BusFrame",
    "BusAnswer",
    "frameFields",
    "decodeFrame",
    "resultFields",
    "skippedFields",
    "decodeAnswer",
    "ACK_AND_DELETE",
    "VIEW_GROUP_PREFIX",
]

PREFIX = "imageproto"
STREAMS_KEY = f"{PREFIX}:streams"
WORKERS_KEY = f"{PREFIX}:workers"
GROUPS_KEY = f"{PREFIX}:groups"
_FRAMES = f"{PREFIX}:frames:"


def framesKey(stream: str) -> str:
    """
    The Redis Stream that carries stream C{stream}'s frames.  Stream names
    (the wire's rule: A-Z a-z 0-9 . _ -) hold no braces, so the hash tag is
    exactly the name.
    """
    return f"{_FRAMES}{{{stream}}}"


def streamOfKey(key) -> str:
    """
    The stream name in a L{framesKey}.

    @raise ValueError: for a key that is not one.
    """
    if isinstance(key, bytes):
        key = key.decode("utf-8")
    if not (key.startswith(_FRAMES + "{") and key.endswith("}")):
        raise ValueError(f"{key!r} is not a frames key")
    return key[len(_FRAMES) + 1 : -1]


def leaseKey(stream: str) -> str:
    """
    The key holding stream C{stream}'s lease (the receiver and connection
    that may take its frames).
    """
    return f"{PREFIX}:lease:{{{stream}}}"


def resultsKey(receiverId: str) -> str:
    """
    The Redis Stream that receiver C{receiverId} reads its answers from.
    """
    return f"{PREFIX}:results:{receiverId}"


def entryTime(entryId) -> float:
    """
    The Redis server's time, in seconds, when entry C{entryId} was added.
    """
    if isinstance(entryId, bytes):
        entryId = entryId.decode("ascii")
    return int(entryId.split("-", 1)[0]) / 1000.0


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _get(fields: dict, name: str):
    value = fields.get(name.encode("ascii"))
    if value is None:
        value = fields.get(name)
    if value is None:
        raise ValueError(f"bus entry has no {name!r} field")
    return value


@frozen
class BusFrame:
    """
    A frame as a worker reads it from the bus.

    @ivar receiver: the id of the receiver whose sender sent it (where the
        answer goes).
    @ivar annotated: the sender asked for the marked-up JPEG.
    """

    stream: str
    session: int
    seq: int
    captureTime: float
    sendTime: float
    receiveTime: float
    receiver: str
    live: bool
    annotated: bool
    jpeg: bytes = field(repr=False)
    senderDropped: int = 0

    @property
    def key(self) -> tuple:
        return (self.stream, self.session, self.seq)


def frameFields(frame, receiverId: str, annotated: bool = False) -> dict:
    """
    The fields of the bus entry for C{frame} (a
    L{imageproto.receiver.pipeline.ReceivedFrame}).
    """
    return {
        "stream": frame.stream,
        "session": str(frame.session),
        "seq": str(frame.seq),
        "captureTime": repr(float(frame.captureTime)),
        "sendTime": repr(float(frame.sendTime)),
        "receiveTime": repr(float(frame.receiveTime)),
        "receiver": receiverId,
        "live": "1" if frame.live else "0",
        "annotated": "1" if annotated else "0",
        "dropped": str(frame.senderDropped),
        "jpeg": frame.jpeg,
    }


def decodeFrame(fields: dict) -> BusFrame:
    """
    The L{BusFrame} in a bus entry's fields (bytes or text keys).

    @raise ValueError: for an entry that is not one.
    """
    try:
        return BusFrame(
            stream=_text(_get(fields, "stream")),
            session=int(_get(fields, "session")),
            seq=int(_get(fields, "seq")),
            captureTime=float(_get(fields, "captureTime")),
            sendTime=float(_get(fields, "sendTime")),
            receiveTime=float(_get(fields, "receiveTime")),
            receiver=_text(_get(fields, "receiver")),
            live=_text(_get(fields, "live")) == "1",
            annotated=_text(_get(fields, "annotated")) == "1",
            jpeg=bytes(_get(fields, "jpeg")),
            senderDropped=int(fields.get(b"dropped", fields.get("dropped", 0))),
        )
    except (TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed bus frame entry: {e}") from None


@frozen
class BusAnswer:
    """
    A worker's answer to one frame, as the receiver reads it.

    @ivar result: the L{wire.Result}, or C{None} when the worker skipped
        the frame (a live frame older than its C{--max-age}).
    """

    stream: str
    session: int
    seq: int
    worker: str
    result: wire.Result | None = field(repr=False)

    @property
    def key(self) -> tuple:
        return (self.stream, self.session, self.seq)


def resultFields(frame: BusFrame, result: wire.Result, worker: str) -> dict:
    """
    The fields of a results entry answering C{frame} with C{result}: the
    RESULT travels encoded as on the wire.
    """
    return {
        "stream": frame.stream,
        "session": str(frame.session),
        "seq": str(frame.seq),
        "worker": worker,
        "result": wire.encodeMessage(result),
    }


def skippedFields(frame: BusFrame, worker: str) -> dict:
    """
    The fields of a results entry saying C{frame} was skipped, unanswered.
    """
    return {
        "stream": frame.stream,
        "session": str(frame.session),
        "seq": str(frame.seq),
        "worker": worker,
        "skipped": "1",
    }


def decodeAnswer(fields: dict) -> BusAnswer:
    """
    The L{BusAnswer} in a results entry's fields.

    @raise ValueError: for an entry that is not one (L{wire.WireError} for
        a RESULT that does not decode).
    """
    raw = fields.get(b"result", fields.get("result"))
    result = None
    if raw is not None:
        result = wire.decodeMessage(bytes(raw))
        if not isinstance(result, wire.Result):
            raise ValueError(f"results entry holds a {type(result).__name__}")
    elif _text(_get(fields, "skipped")) != "1":
        raise ValueError("results entry has neither a result nor skipped")
    try:
        return BusAnswer(
            stream=_text(_get(fields, "stream")),
            session=int(_get(fields, "session")),
            seq=int(_get(fields, "seq")),
            worker=_text(_get(fields, "worker")),
            result=result,
        )
    except (TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed results entry: {e}") from None


# A group whose name starts with this (a viewer's) reads only new entries
# and never holds an entry back from deletion: it shows frames, it does not
# keep them.
VIEW_GROUP_PREFIX = "view"

# EVAL with KEYS[1] a frames key, ARGV[1] a group, ARGV[2] an entry ID and
# ARGV[3...] the groups that keep entries (GROUPS_KEY's members, passed in
# so that the script touches one key): XACK the entry in the group, then
# XDEL it when each of those groups exists on the key and every group on
# the key has acknowledged it (delivered it, and holds it not pending);
# viewers' groups (VIEW_GROUP_PREFIX) do not count.
# Returns 1 when the entry was deleted.  A group that never reads again
# (its workers gone for good) keeps finite entries: XGROUP DESTROY it.
ACK_AND_DELETE = """
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local present = {}
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  present[name] = true
  if string.sub(name, 1, %d) ~= '%s' then
    if before(last, ARGV[2]) then return 0 end
    if #redis.call('XPENDING', KEYS[1], name, ARGV[2], ARGV[2], 1) > 0 then return 0 end
  end
end
for i = 3, #ARGV do
  if not present[ARGV[i]] then return 0 end
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""" % (len(VIEW_GROUP_PREFIX), VIEW_GROUP_PREFIX)
