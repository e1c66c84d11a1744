# -*- test-case-name: tests.test_bus_hosted,tests.test_bus_redis -*-
"""
The receiver's consumers hosted on the far side of the bus: C{twistd
imageproto-worker --save-dir/--record-dir/--web/--stats-file} reads the
frames every receiver publishes and hands each, as a
L{imageproto.receiver.frames.ReceivedFrame}, to the same consumer classes a
receiver uses (L{SaveDirSink}, L{Recorder}, the viewer's L{LatestFrameHub}
and web resources, the statistics), so one viewer or one recorder serves
the streams of every receiver.  The service a worker runs them in is
L{imageproto.features.bus.hosting.BusConsumersService}.

Each kind of consumer reads in its own consumer group (L{GroupReader}):
C{save}, C{record}, C{view-<worker name>}, C{stats} (or all in C{--group}).
A group's frames go through a L{HostedPipeline} to its consumers, and an
entry is acknowledged (L{keys.ACK_AND_DELETE}) only once every consumer
accepted the frame: a frame the save-dir sink could not store (a full
disk) stays pending and is claimed again after C{claimAfter}.  A viewer's
group (its name starts with C{view}) reads only new entries and never holds
an entry back from deletion: it shows the latest frames, it does not keep
them.

A stream starts (consumers are told C{streamStarted}) with its first
frame, and stops (C{streamStopped}: the recorder finishes its file) after
C{idleAfter} seconds without one.  L{BusStreams} keeps each stream's
L{StreamStats} as a receiver's registry does, and names the receiver that
published its latest frame.
"""

from __future__ import annotations

from attrs import define
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from imageproto.features.bus import keys
from imageproto.receiver.frames import ALREADY_STORED, ReceivedFrame, StorageError
from imageproto.receiver.pipeline import Consumers
from imageproto.receiver.stats import StreamStats

__all__ = ["HostedPipeline", "BusStreams", "GroupReader", "receivedFrame"]

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"


def receivedFrame(frame: keys.BusFrame) -> ReceivedFrame:
    """
    The L{ReceivedFrame} a receiver's consumers would have been given for
    C{frame}: its times are the sender's and the receiver's, as published.
    """
    return ReceivedFrame(
        frame.stream,
        frame.seq,
        frame.captureTime,
        frame.sendTime,
        frame.receiveTime,
        frame.jpeg,
        frame.senderDropped,
        frame.live,
        frame.session,
    )


class HostedPipeline(Consumers):
    """
    Hands each frame to every consumer, as the receiver's
    L{imageproto.receiver.pipeline.FramePipeline} does, and says how they
    took it; there is no sender to acknowledge, so the outcome goes to the
    caller (which acknowledges the bus entry).
    """

    def frameReceived(self, frame: ReceivedFrame) -> Deferred:
        """
        @return: a L{Deferred} firing with L{ACCEPTED}, L{DUPLICATE} (a
            consumer had it already: a claimed entry delivered again) or
            L{REJECTED} (a consumer failed; logged unless a L{StorageError},
            which the consumer logs itself).
        """
        outcomes = self.handOut(frame)
        if not outcomes:
            return succeed(ACCEPTED)

        def settled(result):
            if isinstance(result, Failure):
                failure = result.value.subFailure
                if not failure.check(StorageError):
                    self.log.failure(
                        "frame {seq} of {stream} could not be taken",
                        failure,
                        seq=frame.seq,
                        stream=frame.stream,
                    )
                return REJECTED
            return DUPLICATE if ALREADY_STORED in result else ACCEPTED

        return gatherResults(outcomes, consumeErrors=True).addBoth(settled)



@define(eq=False)
class _Hosted:
    stats: StreamStats
    receiver: str = ""
    session: int | None = None
    live: bool = False
    lastFrame: float = 0.0
    connected: bool = False


class BusStreams:
    """
    The streams seen on the bus, with their statistics (the stats file's,
    C{/api/streams}' and C{/metrics}' source, like a receiver's
    L{imageproto.receiver.registry.StreamRegistry}), and their lifecycle,
    told to C{pipeline}.

    @param idleAfter: seconds without a frame after which a stream stops.
    """

    def __init__(self, clock, pipeline: HostedPipeline, idleAfter: float = 10.0,
                 statsWindow: float = 5.0) -> None:
        self.clock = clock
        self.pipeline = pipeline
        self.idleAfter = idleAfter
        self.statsWindow = statsWindow
        self._streams: dict[str, _Hosted] = {}
        self._sections: dict = {}

    def addSection(self, name: str, snapshot) -> None:
        self._sections[name] = snapshot

    def frameArrived(self, frame: ReceivedFrame, receiver: str) -> None:
        """
        A frame of C{frame.stream}, published by C{receiver}, is about to go
        to the consumers: start the stream (or a new session of it).
        """
        now = self.clock.seconds()
        stream = self._streams.get(frame.stream)
        if stream is None:
            stream = self._streams[frame.stream] = _Hosted(StreamStats(window=self.statsWindow))
        newSession = stream.session != frame.session
        if newSession or not stream.connected:
            stream.stats.connected(now, newSession)
            stream.session = frame.session
        stream.receiver, stream.live, stream.lastFrame = receiver, frame.live, now
        if not stream.connected:
            stream.connected = True
            self.pipeline.streamStarted(frame.stream)

    def frameSettled(self, frame: ReceivedFrame, outcome: str) -> None:
        stream = self._streams.get(frame.stream)
        if stream is None:
            return
        if outcome == ACCEPTED:
            stream.stats.frameAccepted(
                frame.seq, len(frame.jpeg), frame.captureTime, frame.receiveTime,
                frame.senderDropped, frame.sendTime,
            )
        elif outcome == DUPLICATE:
            stream.stats.duplicateReceived(frame.receiveTime)
        else:
            stream.stats.storageFailed(frame.receiveTime)

    def checkIdle(self) -> None:
        """
        Stop the streams that sent no frame for C{idleAfter} seconds.
        """
        now = self.clock.seconds()
        for name, stream in sorted(self._streams.items()):
            if stream.connected and now - stream.lastFrame >= self.idleAfter:
                stream.connected = False
                self.pipeline.streamStopped(name)

    def snapshot(self) -> dict:
        """
        As L{StreamRegistry.snapshot}, each stream with C{"receiver"} (the
        id of the receiver that published its latest frame) too;
        C{"connected"} means a frame came in the last C{idleAfter} seconds.
        """
        now = self.clock.seconds()
        streams = {}
        for name, stream in sorted(self._streams.items()):
            streams[name] = stream.stats.snapshot(now, stream.connected)
            streams[name]["receiver"] = stream.receiver
            streams[name]["live"] = stream.live
        snapshot = {"streams": streams}
        for name, section in self._sections.items():
            snapshot[name] = section()
        return snapshot


class GroupReader(Service):
    """
    Reads one consumer group's frames (through a
    L{imageproto.features.bus.worker.WorkerLoop}'s C{fetch}, in a thread),
    hands them to C{streams.pipeline} on the reactor and acknowledges each
    entry once its consumers accepted it.

    @param loop: the group's L{WorkerLoop} (only C{fetch}, C{acknowledge}
        and C{keys} are used), called in C{runInThread}.
    @param maxInFlight: frames with the consumers at once; reading waits
        while this many are.
    """

    log = Logger()

    def __init__(self, loop, streams: BusStreams, runInThread, clock,
                 maxInFlight: int = 32, batch: int = 16) -> None:
        self.loop = loop
        self.streams = streams
        self.runInThread = runInThread
        self.clock = clock
        self.maxInFlight = maxInFlight
        self.batch = batch
        self.inFlight = 0
        self.counts = {"frames": 0, "rejected": 0, "malformed": 0, "claimed": 0}
        self._reading: Deferred | None = None
        self._acks: set = set()
        self._retry = None
        self._delay = 0.05
        self._healthy = True
        self._stopped: Deferred | None = None

    @property
    def group(self) -> str:
        return self.loop.group

    def startService(self) -> None:
        super().startService()
        self._read()

    def _read(self) -> None:
        self._retry = None
        if not self.running:
            self._checkStopped()
            return
        if self._reading is not None or self.inFlight >= self.maxInFlight:
            return
        d = self._reading = self.runInThread(self.loop.fetch, min(self.batch, self.maxInFlight - self.inFlight))
        d.addCallbacks(self._fetched, self._failed)

    def _later(self, delay: float) -> None:
        if self.running and self._retry is None:
            self._retry = self.clock.callLater(delay, self._read)

    def _fetched(self, fetched) -> None:
        self._reading = None
        if not self._healthy:
            self.log.info("bus group {group}: Redis is back", group=self.group)
        self._healthy, self._delay = True, 0.05
        entries, claimed = fetched
        self.counts["claimed"] += claimed
        for key, entryId, fields in entries:
            self._handle(key, entryId, fields)
        if not self.running:
            self._checkStopped()
        elif not entries and not self.loop.keys:
            self._later(0.2)  # no frame stream yet
        else:
            self._read()

    def _failed(self, failure) -> None:
        self._reading = None
        if not self.running:
            self._checkStopped()
            return
        if self._healthy:
            self.log.error("bus group {group}: reading failed ({error}); retrying",
                           group=self.group, error=failure.getErrorMessage())
        self._healthy = False
        delay, self._delay = self._delay, min(self._delay * 2, 1.0)
        self._later(delay)

    def _handle(self, key: str, entryId, fields: dict) -> None:
        try:
            busFrame = keys.decodeFrame(fields)
        except ValueError as e:
            self.counts["malformed"] += 1
            self.log.warn("bus group {group}: entry {id} of {key}: {error}",
                          group=self.group, id=entryId, key=key, error=str(e))
            self._acknowledge(key, entryId)
            return
        frame = receivedFrame(busFrame)
        self.streams.frameArrived(frame, busFrame.receiver)
        self.inFlight += 1
        d = self.streams.pipeline.frameReceived(frame)
        d.addCallback(self._settled, frame, key, entryId)

    def _settled(self, outcome: str, frame: ReceivedFrame, key: str, entryId) -> None:
        self.inFlight -= 1
        self.streams.frameSettled(frame, outcome)
        if outcome == REJECTED:
            # Left pending: claimed again (by this group) after claimAfter.
            self.counts["rejected"] += 1
        else:
            self.counts["frames"] += 1
            self._acknowledge(key, entryId)
        self._read()

    def _acknowledge(self, key: str, entryId) -> None:
        d = self.runInThread(self.loop.acknowledge, key, entryId)
        self._acks.add(d)

        def done(result):
            self._acks.discard(d)
            if isinstance(result, Failure):
                # Left pending: claimed again, and its consumers see it twice.
                self.log.warn("bus group {group}: acknowledging {id} failed ({error})",
                              group=self.group, id=entryId, error=result.getErrorMessage())

        d.addBoth(done)

    def stopService(self):
        """
        Stop reading; fires once the read in progress (it returns within
        its block time), the frames with the consumers (still running) and
        their acknowledgements are done.
        """
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._stopped = Deferred()
        self._checkStopped()
        return self._stopped

    def _checkStopped(self) -> None:
        stopped = self._stopped
        if stopped is None or stopped.called or self._reading is not None or self.inFlight:
            return
        DeferredList(list(self._acks), consumeErrors=True).addCallback(
            lambda _: stopped.callback(None)
        )
