# -*- test-case-name: tests.test_bus_leases,tests.test_bus_redis -*-
"""
Stream names held across receivers: with C{--bus}, a stream name is held
by one live connection among all the receivers on the bus, through a lease
in Redis (L{keys.leaseKey}: C{SET imageproto:lease:{name}
<receiverId>:<n> PX ttl}).

L{StreamLeases} is an attach listener of the receiver's registry.  A HELLO
the registry accepts takes the lease (whoever held it: the newer connection
wins, as within one receiver); the lease is renewed every C{renewEvery}
seconds while the connection lasts and released when it closes.  A renewal
that finds another receiver's connection in the lease means that receiver
took the name: this one drops its sender with ERROR 9 (REPLACED), as a
receiver does when a newer connection arrives locally.

Every Redis call runs in the bus's threads; the handshake never waits for
one.  While Redis is unreachable nothing is dropped: leases are kept by
their holders, and one that expired meanwhile is taken again on the next
renewal (two receivers may then both hold a name until the first renewal
after Redis returns; the later SET wins and the other drops its sender).
"""

from __future__ import annotations

from attrs import define
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from imageproto.features.bus import keys

__all__ = ["StreamLeases", "takeLease", "renewLeases", "releaseLease", "RENEW", "RELEASE"]

# KEYS[1] the lease, ARGV[1] our token, ARGV[2] the TTL in ms: keep (or
# take again, if it expired) a lease that is ours; 0 when another holds it.
RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] the lease, ARGV[1] our token: delete it if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def takeLease(client, stream: str, token: str, ttlMillis: int) -> bytes | None:
    """
    Take stream C{stream}'s lease for C{token}, whoever held it.

    @return: the token it replaced (another connection's), or C{None}.
    """
    return client.set(keys.leaseKey(stream), token, px=ttlMillis, get=True)


def renewLeases(client, leases: list, ttlMillis: int) -> list:
    """
    Renew C{leases} (C{[(stream, token), ...]}) in one round trip.

    @return: per lease, whether it is still ours.
    """
    pipe = client.pipeline(transaction=False)
    for stream, token in leases:
        pipe.eval(RENEW, 1, keys.leaseKey(stream), token, ttlMillis)
    return [bool(r) for r in pipe.execute()]


def releaseLease(client, stream: str, token: str) -> bool:
    return bool(client.eval(RELEASE, 1, keys.leaseKey(stream), token))


@define(eq=False)
class _Lease:
    token: str
    protocol: object
    taken: bool = False


class StreamLeases:
    """
    Keeps the leases of this receiver's live streams; see the module
    docstring.

    @param runInThread: C{f(callable, *args) -> Deferred}, the bus's threads.
    @param client: a redis-py client, passed to the blocking calls.
    """

    log = Logger()

    def __init__(self, runInThread, client, receiverId: str, clock,
                 ttl: float = 5.0, renewEvery: float = 0.5) -> None:
        self.runInThread = runInThread
        self.client = client
        self.receiverId = receiverId
        self.clock = clock
        self.ttlMillis = int(ttl * 1000)
        self.renewEvery = renewEvery
        self._held: dict[str, _Lease] = {}
        self._serial = 0
        self._renewing = False
        self._loop = None
        self.taken = 0
        self.lost = 0
        self.failures = 0

    # -- the registry's attach listener --------------------------------------

    def streamAttached(self, stream, protocol) -> None:
        self._serial += 1
        lease = _Lease(f"{self.receiverId}:{self._serial}", protocol)
        self._held[stream.name] = lease
        d = self.runInThread(takeLease, self.client, stream.name, lease.token, self.ttlMillis)

        def taken(previous):
            lease.taken = True
            self.taken += 1
            previous = previous.decode("utf-8", "replace") if isinstance(previous, bytes) else previous
            if previous and previous.rsplit(":", 1)[0] != self.receiverId:
                self.log.info(
                    "bus: stream {stream} taken over from receiver {previous}",
                    stream=stream.name, previous=previous.rsplit(":", 1)[0],
                )

        def failed(failure):
            # Taken again by the next renewal once Redis answers.
            lease.taken = True
            self._failed(failure)

        d.addCallbacks(taken, failed)

    def streamDetached(self, stream, protocol) -> None:
        lease = self._held.get(stream.name)
        if lease is None or lease.protocol is not protocol:
            return
        del self._held[stream.name]
        self.runInThread(releaseLease, self.client, stream.name, lease.token).addErrback(self._failed)

    # -- renewals ------------------------------------------------------------

    def start(self) -> None:
        self._loop = LoopingCall(self.renew)
        self._loop.clock = self.clock
        self._loop.start(self.renewEvery, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def renew(self) -> None:
        """
        Renew every lease taken (one round trip); drop the connections
        whose lease another receiver took.
        """
        if self._renewing:
            return
        leases = [(name, lease) for name, lease in sorted(self._held.items()) if lease.taken]
        if not leases:
            return
        self._renewing = True
        d = self.runInThread(
            renewLeases, self.client, [(name, lease.token) for name, lease in leases], self.ttlMillis
        )

        def renewed(ours):
            for (name, lease), kept in zip(leases, ours):
                if kept or self._held.get(name) is not lease:
                    continue
                del self._held[name]
                self.lost += 1
                self.log.info(
                    "bus: another receiver took stream {stream}; dropping this one's sender",
                    stream=name,
                )
                lease.protocol.replaced()

        def done(result):
            self._renewing = False
            return result

        d.addCallbacks(renewed, self._failed).addBoth(done)

    def _failed(self, failure) -> None:
        self.failures += 1
        self.log.debug("bus: lease call failed: {error}", error=failure.getErrorMessage())

    def snapshot(self) -> dict:
        return {"held": len(self._held), "taken": self.taken, "lost": self.lost}
