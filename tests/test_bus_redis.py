"""
The bus against a real C{redis-server} each test class starts for itself
(free loopback port, temporary directory, persistence off unless the test
is about a restart), and real C{twistd} processes for the end-to-end tests:
two workers sharing a video's frames, a worker SIGKILLed mid-frame whose
frames another claims, and Redis stopped and started again under a finite
and a live sender.

Waits poll real conditions with a deadline; nothing sleeps.
"""

import atexit
import json
import os
import time

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto.features.bus import keys, link
from imageproto.features.bus.redisserver import MISSING, RedisServer, redisServerBinary
from imageproto.features.bus.worker import WorkerLoop
from imageproto.features.inference.engine import Processed
from imageproto.receiver.pipeline import ReceivedFrame
from imageproto.tap import freePort, listening
from imageproto.testing import waitFor
from tests.helpers import FAKE_JPEG, TwistdProcesses

try:
    import redis
except ImportError:  # pragma: no cover
    redis = None

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

# The clip the process tests send: FRAMES numbered frames.
FRAMES = 48


def writeClip(path: str) -> None:
    from tests.helpers.jpegs import writeClip as write

    write(path, FRAMES)


def _skip(needsCv2=False):
    if redis is None:
        return "redis-py is not installed (pip install 'imageproto[bus]')"
    if redisServerBinary() is None:
        return MISSING
    if needsCv2 and cv2 is None:
        return "OpenCV (cv2) is not installed"
    return None


class _RedisClass:
    """
    A mixin giving each test class one redis-server, emptied before each
    test.  Trial has no C{setUpClass}: the first test of the class (in this
    trial process) starts it, the class's last test stops it in cleanup,
    and an C{atexit} hook stops one a partial run left behind.
    """

    appendonly = False
    server = None
    _finished = 0

    def setUp(self):
        cls = type(self)
        if cls.server is None:
            cls.server = RedisServer(appendonly=cls.appendonly)
            cls.server.start()
            atexit.register(cls.server.cleanup)
        elif cls.server.process is None:
            cls.server.start()
        self.addCleanup(self._classDone)
        self.client = link.connect(self.server.url)
        self.client.flushall()
        self.addCleanup(self.client.close)

    def _classDone(self):
        cls = type(self)
        cls._finished += 1
        total = len([n for n in dir(cls) if n.startswith("test_")])
        if cls._finished >= total and cls.server is not None:
            cls.server.cleanup()
            cls.server = None
            cls._finished = 0


def _frame(seq, stream="cam", live=False):
    return ReceivedFrame(stream, seq, 1.0, 1.0, 1.0, FAKE_JPEG, 0, live, 5)


def _process(stream, jpeg, annotated):
    return Processed([{"label": stream, "confidence": 1.0, "box": [0, 0, 1, 1]}], 3)


class WorkerLoopTests(_RedisClass, SynchronousTestCase):
    """
    One worker loop and the link's calls on a real Redis, in this process.
    """

    skip = _skip()

    def publish(self, *frames):
        entries = [
            (keys.framesKey(f.stream), keys.frameFields(f, "r1"), 256 if f.live else None)
            for f in frames
        ]
        return link.publish(self.client, entries)

    def loop(self, consumer="w-0", **kw):
        kw.setdefault("blockMillis", 50)
        return WorkerLoop(self.client, _process, consumer, "w", **kw)

    def answers(self):
        return [keys.decodeAnswer(f) for _, f in link.readAnswers(self.client, keys.resultsKey("r1"), b"0-0", 10)]

    def untilIdle(self, loop, deadline=10.0):
        totals = {}
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            counts = loop.step()
            for k, v in counts.items():
                if isinstance(v, int):
                    totals[k] = totals.get(k, 0) + v
            if counts["idle"] and loop.keys:
                return totals
        self.fail("the loop never went idle")

    def test_answersOnTheReceiversResultsStream(self):
        """
        A published frame is processed once and its RESULT lands on the
        receiver's results stream, tied to stream, session and seq; the
        entry is acknowledged and deleted (finite streams are never
        trimmed, so this is what frees them).
        """
        self.publish(_frame(0), _frame(1))
        totals = self.untilIdle(self.loop())
        self.assertEqual(totals["processed"], 2)
        answers = self.answers()
        self.assertEqual([a.key for a in answers], [("cam", 5, 0), ("cam", 5, 1)])
        self.assertEqual(answers[0].result.detections[0]["label"], "cam")
        self.assertEqual(self.client.xlen(keys.framesKey("cam")), 0)
        self.assertEqual(self.client.xpending(keys.framesKey("cam"), "detect")["pending"], 0)

    def test_entryDeletedOnlyWhenEveryGroupAcknowledged(self):
        """
        With a second consumer group on a finite stream (a save-dir worker's),
        the detectors' acknowledgement keeps the entry; the other group reads
        it and its acknowledgement deletes it.
        """
        key = keys.framesKey("cam")
        self.publish(_frame(0))
        self.client.xgroup_create(key, "save", id="0")
        totals = self.untilIdle(self.loop())
        self.assertEqual(totals["processed"], 1)
        self.assertEqual(self.client.xlen(key), 1)
        saver = self.loop(consumer="s-0", group="save")
        entries, _ = saver.fetch(count=8)
        self.assertEqual([keys.decodeFrame(f).seq for _, _, f in entries], [0])
        self.assertEqual(self.client.xlen(key), 1)
        saver.acknowledge(key, entries[0][1])
        self.assertEqual(self.client.xlen(key), 0)
        self.assertEqual(self.client.xpending(key, "save")["pending"], 0)

    def test_entryKeptWhileAnotherGroupHoldsIt(self):
        """
        An entry another group has read but not acknowledged (pending there)
        is not deleted by this group's acknowledgement; that group's own
        acknowledgement deletes it.
        """
        key = keys.framesKey("cam")
        self.publish(_frame(0))
        self.client.xgroup_create(key, "save", id="0")
        saver = self.loop(consumer="s-0", group="save")
        [(_, entryId, _)], _ = saver.fetch()
        self.untilIdle(self.loop())
        self.assertEqual(self.client.xlen(key), 1)
        saver.acknowledge(key, entryId)
        self.assertEqual(self.client.xlen(key), 0)

    def test_entryKeptForAKeepingGroupNotYetOnTheStream(self):
        """
        A group that keeps entries (registered by its loop in
        imageproto:groups) but has not yet made itself on a new stream
        keeps the detectors from deleting that stream's entries; once it
        reads and acknowledges them they go.  A viewer's group keeps
        nothing.
        """
        key = keys.framesKey("cam")
        saver = self.loop(consumer="s-0", group="save")
        viewer = self.loop(consumer="v-0", group="view-x")
        saver.fetch()
        viewer.fetch()
        self.assertEqual(self.client.smembers(keys.GROUPS_KEY), {b"save"})
        self.publish(_frame(0))
        totals = self.untilIdle(self.loop())
        self.assertEqual(totals["processed"], 1)
        self.assertEqual(self.client.xlen(key), 1)
        saver._nextDiscover = 0.0
        entries, _ = saver.fetch()
        saver.acknowledge(key, entries[0][1])
        self.assertEqual(self.client.xlen(key), 0)

    def test_framesPublishedBeforeAnyWorkerAreTaken(self):
        """
        The group starts at the stream's beginning: frames that were
        published before a worker existed are processed.
        """
        self.publish(*[_frame(i) for i in range(3)])
        totals = self.untilIdle(self.loop())
        self.assertEqual(totals["processed"], 3)

    def test_deadConsumersFrameIsClaimed(self):
        """
        A frame another consumer read and never acknowledged (it died) is
        claimed after claimAfter and answered once.
        """
        self.publish(_frame(0))
        loop = self.loop(consumer="w-1", claimAfter=0.2)
        loop.step()  # creates the group; takes the frame
        self.client.xadd(keys.framesKey("cam"), keys.frameFields(_frame(1), "r1"))
        # The dead consumer reads frame 1 and never finishes it.
        self.client.xreadgroup("detect", "dead-0", {keys.framesKey("cam"): ">"}, count=1)
        claimed = 0
        end = time.monotonic() + 10
        while not claimed and time.monotonic() < end:
            claimed += loop.step()["claimed"]
        self.assertEqual(claimed, 1)
        self.assertEqual(sorted(a.seq for a in self.answers()), [0, 1])

    def test_staleLiveFrameIsSkipped(self):
        """
        A live frame older than maxAge is acknowledged unprocessed and the
        receiver is told it was skipped.
        """
        self.publish(_frame(0, live=True))
        loop = self.loop(maxAge=1.0, now=lambda: time.time() + 5)
        totals = self.untilIdle(loop)
        self.assertEqual((totals["processed"], totals["skipped"]), (0, 1))
        [answer] = self.answers()
        self.assertIsNone(answer.result)
        self.assertEqual(self.client.xpending(keys.framesKey("cam"), "detect")["pending"], 0)

    def test_liveStreamTrimmed(self):
        """
        A live stream keeps about MAXLEN entries however many are published.
        """
        for start in range(0, 1200, 100):
            self.publish(*[_frame(i, live=True) for i in range(start, start + 100)])
        self.assertLess(self.client.xlen(keys.framesKey("cam")), 256 + 100)

    def test_observeReportsPendingAndWorkers(self):
        """
        The monitor sees each stream's length, its group's pending entries
        and the oldest one's age, and the workers that sent heartbeats.
        """
        self.publish(_frame(0))
        loop = self.loop()
        loop._discover()
        self.client.xreadgroup("detect", "held-0", {keys.framesKey("cam"): ">"}, count=1)
        loop.step()
        observed = link.observe(self.client, keys.resultsKey("r1"))
        group = observed["streams"]["cam"]["groups"]["detect"]
        self.assertEqual(group["pending"], 1)
        self.assertGreaterEqual(group["oldest_pending_age_s"], 0.0)
        self.assertEqual(observed["streams"]["cam"]["length"], 1)
        self.assertIn("w", observed["workers"])


class _Stream:
    def __init__(self, name):
        self.name = name


class _Connection:
    def __init__(self):
        self.replacedCalls = 0

    def replaced(self):
        self.replacedCalls += 1


class LeaseTests(_RedisClass, SynchronousTestCase):
    """
    Two receivers' L{StreamLeases} on one real Redis, their thread calls run
    by the test.
    """

    skip = _skip()

    def leases(self, receiverId):
        from imageproto.features.bus.leases import StreamLeases
        from imageproto.testing import FakeThreadRunner

        threads = FakeThreadRunner()
        return StreamLeases(threads, self.client, receiverId, Clock()), threads

    def holder(self, name="cam"):
        value = self.client.get(keys.leaseKey(name))
        return value.decode() if value is not None else None

    def test_newerConnectionOnAnotherReceiverTakesTheName(self):
        """
        A HELLO on the second receiver takes the name's lease; the first
        receiver's next renewal finds it taken and drops its connection
        (replaced: ERROR 9); the second's renewal keeps it.
        """
        first, firstThreads = self.leases("r1")
        second, secondThreads = self.leases("r2")
        old, new = _Connection(), _Connection()
        first.streamAttached(_Stream("cam"), old)
        firstThreads.runAll()
        self.assertEqual(self.holder(), "r1:1")
        first.renew()
        firstThreads.runAll()
        self.assertEqual(old.replacedCalls, 0)
        second.streamAttached(_Stream("cam"), new)
        secondThreads.runAll()
        self.assertEqual(self.holder(), "r2:1")
        first.renew()
        firstThreads.runAll()
        second.renew()
        secondThreads.runAll()
        self.assertEqual((old.replacedCalls, new.replacedCalls), (1, 0))
        self.assertEqual((first.snapshot(), second.snapshot()["held"]),
                         ({"held": 0, "taken": 1, "lost": 1}, 1))
        # The dropped connection closing does not release the new holder's lease.
        first.streamDetached(_Stream("cam"), old)
        firstThreads.runAll()
        self.assertEqual(self.holder(), "r2:1")
        self.assertGreater(self.client.pttl(keys.leaseKey("cam")), 0)

    def test_releasedOnClose(self):
        """
        The current connection closing releases its lease.
        """
        leases, threads = self.leases("r1")
        connection = _Connection()
        leases.streamAttached(_Stream("cam"), connection)
        threads.runAll()
        leases.streamDetached(_Stream("cam"), connection)
        threads.runAll()
        self.assertIsNone(self.holder())

    def test_expiredLeaseTakenAgain(self):
        """
        A lease Redis no longer has (it expired while Redis was away, or
        Redis restarted empty) is taken again by its holder's renewal; the
        connection is not dropped.
        """
        leases, threads = self.leases("r1")
        connection = _Connection()
        leases.streamAttached(_Stream("cam"), connection)
        threads.runAll()
        self.client.delete(keys.leaseKey("cam"))
        leases.renew()
        threads.runAll()
        self.assertEqual(connection.replacedCalls, 0)
        self.assertEqual(self.holder(), "r1:1")


class _Processes(TwistdProcesses):
    """
    Real twistd processes (killed at cleanup if still running) that import
    the test detector from this checkout.
    """

    timeout = 180

    def spawn(self, name, args, env=None):
        environment = os.environ.copy()
        environment.update(env or {})
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, environment.get("PYTHONPATH")) if p
        )
        return TwistdProcesses.spawn(self, name, args, env=environment)

    def prepare(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.clip = os.path.join(self.directory, "clip.avi")
        writeClip(self.clip)
        self.port = freePort()
        self.statsFile = os.path.join(self.directory, "stats.json")

    @defer.inlineCallbacks
    def startReceiver(self, *args):
        receiver = self.spawn("receiver", [
            "imageproto", "--port", f"tcp:{self.port}:interface=127.0.0.1",
            "--bus", self.server.url, "--bus-id", "r1", "--stats-file", self.statsFile, *args,
        ])
        yield waitFor(lambda: receiver.status is not None or listening(self.port), 30, "the receiver to listen")
        self.assertIsNone(receiver.status, receiver.text)
        return receiver

    def startWorker(self, name, *args, slow="0.05"):
        return self.spawn(name, [
            "imageproto-worker", "--bus", self.server.url, "--name", name,
            "--detect", "imageproto.features.bus.testing:SlowDetector", *args,
        ], env={"IMAGEPROTO_SLOW_SECONDS": slow})

    def startSender(self, name, *args):
        return self.spawn(f"sender-{name}", [
            "imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port}", "--max-delay", "0.5",
            "--name", name, *args,
        ])

    def results(self, sender):
        path = os.path.join(self.directory, sender, "results", "results.jsonl")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def stats(self):
        try:
            with open(self.statsFile, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def assertEveryFrameAnsweredOnce(self, sender, name):
        results = self.results(sender)
        seqs = sorted(r["seq"] for r in results if r["stream"] == name)
        self.assertEqual(seqs, list(range(FRAMES)), "one RESULT per frame, none twice")
        return results


class BusProcessTests(_Processes, _RedisClass, TestCase):
    """
    Receiver, workers and senders as real processes on one Redis.
    """

    skip = _skip(needsCv2=True)

    def setUp(self):
        _RedisClass.setUp(self)
        self.prepare()

    @defer.inlineCallbacks
    def test_twoWorkersShareTheLoad(self):
        """
        Two worker processes share a video's frames through the consumer
        group; the sender gets exactly one RESULT per frame and exits 0.
        """
        yield self.startReceiver()
        workers = [self.startWorker("w1"), self.startWorker("w2")]

        def registered():
            names = {n.decode().rsplit("-", 1)[0] for n in self.client.hkeys(keys.WORKERS_KEY)}
            return {"w1", "w2"} <= names

        # Either one alone keeps up with the clip: both must be reading
        # before it starts, or a slow start-up leaves one nothing to do.
        yield waitFor(registered, 60, "both workers to register")
        sender = self.startSender("clip", "--video", self.clip, "--results", "results")
        yield waitFor(lambda: sender.status is not None, 120, "the sender to finish")
        self.assertEqual(sender.status, 0, sender.text)
        results = self.assertEveryFrameAnsweredOnce("sender-clip", "clip")
        pids = {r["detections"][0]["label"] for r in results}
        self.assertEqual(len(pids), 2, f"both workers answered: {pids}")
        for worker in workers:
            worker.transport.signalProcess("TERM")
        yield defer.gatherResults([w.ended for w in workers])
        # The stats file is rewritten every second.
        yield waitFor(
            lambda: self.stats().get("bus", {}).get("answered") == FRAMES, 10,
            "the stats file to count every answer",
        )
        self.assertEqual(self.stats()["bus"]["published"], FRAMES)

    @defer.inlineCallbacks
    def test_killedWorkersFramesAreClaimed(self):
        """
        A worker SIGKILLed while it holds a frame leaves it pending; the
        other worker claims it after --claim-after and the sender still
        gets exactly one RESULT per frame.
        """
        yield self.startReceiver()
        # A second a frame: the kill below lands while w1 holds one, not in
        # the moment between acknowledging a frame and reading the next.
        first = self.startWorker("w1", "--claim-after", "1", slow="1")
        sender = self.startSender("clip", "--video", self.clip, "--results", "results")
        key = keys.framesKey("clip")

        def holding():
            try:
                return bool(self.client.xpending_range(key, "detect", "-", "+", 10, consumername="w1-0"))
            except redis.ResponseError:
                return False

        yield waitFor(lambda: len(self.results("sender-clip")) >= 3 and holding(), 60, "w1 to hold a frame")
        first.transport.signalProcess("KILL")
        yield first.ended
        held = self.client.xpending_range(key, "detect", "-", "+", 10, consumername="w1-0")
        self.assertTrue(held, "w1 died holding a frame")
        second = self.startWorker("w2", "--claim-after", "1")
        yield waitFor(lambda: sender.status is not None, 120, "the sender to finish")
        self.assertEqual(sender.status, 0, sender.text)
        self.assertEveryFrameAnsweredOnce("sender-clip", "clip")
        self.assertIn("claimed", second.text)
        self.assertEqual(self.client.xpending(key, "detect")["pending"], 0)


    @defer.inlineCallbacks
    def test_redisRestartWithoutPersistenceRepublishes(self):
        """
        Redis restarted without persistence loses the frames no worker had
        taken; the receiver publishes each again once its answer is
        overdue, and the sender still gets one RESULT per frame.
        """
        receiver = yield self.startReceiver("--bus-answer-timeout", "2")
        first = self.startWorker("w1", slow="0")
        sender = self.startSender("clip", "--video", self.clip, "--fps", "8", "--results", "results")

        key = keys.framesKey("clip")

        def waiting():
            # Entries the group never delivered: with w1 gone, no one has
            # them.  Asked of Redis itself, not the stats file, which may be
            # a second old and count entries w1 answered as it stopped.
            try:
                [group] = self.client.xinfo_groups(key)
            except (redis.ResponseError, ValueError):
                return 0
            return len(self.client.xrange(key, min=f"({group['last-delivered-id'].decode()}"))

        yield waitFor(lambda: len(self.results("sender-clip")) >= 5, 60, "the first answers")
        first.transport.signalProcess("TERM")
        yield first.ended
        yield waitFor(lambda: waiting() >= 3, 30, "frames to wait in Redis")
        self.server.stop(kill=True)
        self.server.spawn()
        yield waitFor(self.server.ping, 30, "Redis to start again, empty")
        self.startWorker("w2", slow="0")
        yield waitFor(lambda: sender.status is not None, 120, "the sender to finish")
        self.assertEqual(sender.status, 0, sender.text)
        self.assertEveryFrameAnsweredOnce("sender-clip", "clip")
        # Lost frames were published again (the stats file is rewritten
        # every second).
        self.assertIn("publishing it again", receiver.text)
        yield waitFor(
            lambda: self.stats().get("bus", {}).get("republished", 0) >= 1, 30,
            "the stats file to count the frames published again",
        )


class BusRedisRestartTests(_Processes, _RedisClass, TestCase):
    """
    Redis (append-only file on) stopped for a while and started again.
    """

    skip = _skip(needsCv2=True)
    appendonly = True

    def setUp(self):
        _RedisClass.setUp(self)
        self.prepare()

    @defer.inlineCallbacks
    def test_redisRestart(self):
        """
        While Redis is away the receiver stops acknowledging the video's
        frames and drops (and counts) the camera's; once it is back
        everything resumes by itself and no frame of the video is lost.
        """
        yield self.startReceiver()
        worker = self.startWorker("w1", slow="0")
        clip = self.startSender("clip", "--video", self.clip, "--fps", "8", "--results", "results")
        live = self.startSender("live", "--fps", "20", "--width", "160", "--height", "120")

        def bus():
            return self.stats().get("bus", {})

        def accepted(name):
            return self.stats().get("streams", {}).get(name, {}).get("frames", 0)

        yield waitFor(lambda: len(self.results("sender-clip")) >= 8, 60, "the first answers")
        self.server.stop()
        yield waitFor(
            lambda: not bus().get("up", True) and bus()["backlog"]["finite"] > 0,
            30, "the receiver to see Redis gone with video frames waiting",
        )
        frozen = accepted("clip")
        dropped = bus()["live_dropped"]
        yield waitFor(lambda: bus()["live_dropped"] >= dropped + 20, 30, "live frames to be dropped")
        self.assertEqual(accepted("clip"), frozen, "no video frame acknowledged while Redis is away")
        self.assertLess(frozen, FRAMES)
        self.server.spawn()
        yield waitFor(self.server.ping, 30, "Redis to start again")
        yield waitFor(lambda: clip.status is not None, 120, "the video sender to finish")
        self.assertEqual(clip.status, 0, clip.text)
        self.assertEveryFrameAnsweredOnce("sender-clip", "clip")
        yield waitFor(lambda: bus().get("up") and bus()["per_stream"]["live"]["published"] > 0, 30, "live frames flowing again")
        live.transport.signalProcess("TERM")
        worker.transport.signalProcess("TERM")
        yield defer.gatherResults([live.ended, worker.ended])
        self.assertGreater(bus()["live_dropped"], 0)


class ShardedBusProcessTests(_Processes, TestCase):
    """
    One receiver and one worker given two Redis servers (C{--bus URL1,URL2}),
    as real processes.
    """

    skip = _skip(needsCv2=True)

    def setUp(self):
        self.servers = []
        for _ in range(2):
            server = RedisServer()
            server.start()
            self.addCleanup(server.cleanup)
            self.servers.append(server)
        self.clients = [link.connect(s.url) for s in self.servers]
        for client in self.clients:
            self.addCleanup(client.close)
        self.prepare()
        self.bus = ",".join(s.url for s in self.servers)

    @defer.inlineCallbacks
    def test_streamsSpreadOverTwoServers(self):
        """
        Two videos whose names hash to different servers land one on each
        server (and nowhere else); the worker reads both servers, answers on
        the frame's server, and each sender gets exactly one RESULT per
        frame.
        """
        from imageproto.features.bus.shards import shardOf

        self.assertEqual([shardOf(n, 2) for n in ("clip-0", "clip-1")], [1, 0])
        receiver = self.spawn("receiver", [
            "imageproto", "--port", f"tcp:{self.port}:interface=127.0.0.1",
            "--bus", self.bus, "--bus-id", "r1", "--stats-file", self.statsFile,
        ])
        yield waitFor(lambda: receiver.status is not None or listening(self.port), 30, "the receiver to listen")
        self.assertIsNone(receiver.status, receiver.text)
        worker = self.spawn("w1", [
            "imageproto-worker", "--bus", self.bus, "--name", "w1",
            "--detect", "imageproto.features.bus.testing:SlowDetector",
        ], env={"IMAGEPROTO_SLOW_SECONDS": "0.01"})
        senders = [
            self.startSender(name, "--video", self.clip, "--results", "results")
            for name in ("clip-0", "clip-1")
        ]
        for sender in senders:
            yield waitFor(lambda: sender.status is not None, 120, "the senders to finish")
            self.assertEqual(sender.status, 0, sender.text)
        for name in ("clip-0", "clip-1"):
            self.assertEveryFrameAnsweredOnce(f"sender-{name}", name)
        streams = [
            sorted(keys.streamOfKey(k) for k in client.smembers(keys.STREAMS_KEY))
            for client in self.clients
        ]
        self.assertEqual(streams, [["clip-1"], ["clip-0"]])
        for client in self.clients:
            self.assertGreater(client.xlen(keys.resultsKey("r1")), 0)
        worker.transport.signalProcess("TERM")
        yield worker.ended
        yield waitFor(
            lambda: self.stats().get("bus", {}).get("answered") == 2 * FRAMES, 10,
            "the stats file to count every answer",
        )
        self.assertEqual(self.stats()["bus"]["published"], 2 * FRAMES)


class BusConsumersProcessTests(_Processes, _RedisClass, TestCase):
    """
    The receiver's consumers hosted by workers, as real processes on one
    Redis with two receivers.
    """

    skip = _skip(needsCv2=True)

    def setUp(self):
        _RedisClass.setUp(self)
        self.prepare()

    @defer.inlineCallbacks
    def startSecondReceiver(self):
        self.port2 = freePort()
        receiver = self.spawn("receiver2", [
            "imageproto", "--port", f"tcp:{self.port2}:interface=127.0.0.1",
            "--bus", self.server.url, "--bus-id", "r2",
        ])
        yield waitFor(lambda: receiver.status is not None or listening(self.port2), 30, "the second receiver to listen")
        self.assertIsNone(receiver.status, receiver.text)
        return receiver

    def startHost(self, name, *args):
        return self.spawn(name, ["imageproto-worker", "--bus", self.server.url, "--name", name, *args])

    def hostStats(self, path):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("streams", {})
        except (OSError, ValueError):
            return {}

    def apiStreams(self, port):
        from urllib.request import urlopen

        from twisted.internet.threads import deferToThread

        def get():
            with urlopen(f"http://127.0.0.1:{port}/api/streams", timeout=5) as response:
                return json.load(response)["streams"]

        return deferToThread(get)

    @defer.inlineCallbacks
    def test_hostedConsumersServeEveryReceiver(self):
        """
        Two receivers publish to one bus.  Besides the detecting worker, a
        worker with --save-dir and --stats-file stores every frame of both
        streams (its own group) with the statistics a receiver keeps, naming
        each stream's receiver, and records both (--record-dir); a worker with --web lists both streams
        with their receivers in /api/streams.  Each finite entry is deleted
        once both the detectors' and the save group have acknowledged it.
        """
        from imageproto.receiver.savedir import savedFrames

        yield self.startReceiver()
        yield self.startSecondReceiver()
        saved = os.path.join(self.directory, "saved")
        hostStats = os.path.join(self.directory, "saver.json")
        recorded = os.path.join(self.directory, "recorded")
        webPort = freePort()
        hosts = [
            self.startWorker("w1", slow="0"),
            self.startHost("saver", "--save-dir", saved, "--stats-file", hostStats,
                           "--record-dir", recorded),
            self.startHost("viewer", "--web", f"tcp:{webPort}:interface=127.0.0.1"),
        ]
        yield waitFor(lambda: hosts[2].status is not None or listening(webPort), 30, "the viewer to listen")
        self.assertIsNone(hosts[2].status, hosts[2].text)
        first = self.startSender("clipa", "--video", self.clip, "--results", "results")
        second = self.spawn("sender-clipb", [
            "imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port2}", "--max-delay", "0.5",
            "--name", "clipb", "--video", self.clip, "--results", "results",
        ])
        yield waitFor(lambda: None not in (first.status, second.status), 120, "the senders to finish")
        self.assertEqual((first.status, second.status), (0, 0), first.text + second.text)
        self.assertEveryFrameAnsweredOnce("sender-clipa", "clipa")
        self.assertEveryFrameAnsweredOnce("sender-clipb", "clipb")
        yield waitFor(
            lambda: [len(savedFrames(saved, n)) for n in ("clipa", "clipb")] == [FRAMES, FRAMES],
            30, "the saving worker to store every frame",
        )
        yield waitFor(
            lambda: [self.hostStats(hostStats).get(n, {}).get("frames") for n in ("clipa", "clipb")]
            == [FRAMES, FRAMES],
            30, "the saving worker's stats file to count every frame",
        )
        stats = self.hostStats(hostStats)
        self.assertEqual((stats["clipa"]["receiver"], stats["clipb"]["receiver"]), ("r1", "r2"))
        self.assertIsNotNone(stats["clipa"]["latency_ms"]["p50"])
        streams = yield self.apiStreams(webPort)
        self.assertEqual({n: streams[n]["receiver"] for n in ("clipa", "clipb")}, {"clipa": "r1", "clipb": "r2"})
        self.assertGreater(streams["clipa"]["frames"], 0)
        self.assertIsNotNone(streams["clipb"]["seq"])
        yield waitFor(
            lambda: [self.client.xlen(keys.framesKey(n)) for n in ("clipa", "clipb")] == [0, 0],
            30, "every finite entry to be deleted once both groups acknowledged it",
        )
        for host in hosts:
            host.transport.signalProcess("TERM")
        yield defer.gatherResults([h.ended for h in hosts])
        # twistd ends by the signal that stopped it (no exit status): the
        # logs say whether the stop was clean.
        for host in hosts:
            self.assertIn("Server Shut Down.", host.text)
            self.assertNotIn("Traceback", host.text)
        # The same worker's recorder (group record) recorded both streams.
        self.assertEqual(sorted(n.split("-")[0] for n in os.listdir(recorded)), ["clipa", "clipb"])

    @defer.inlineCallbacks
    def test_streamNameHeldByOneReceiver(self):
        """
        A sender of a stream name connected to the first receiver is dropped
        with ERROR 9 (REPLACED) when another sender of the same name
        connects to the second receiver; the second keeps streaming.
        """
        yield self.startReceiver()
        yield self.startSecondReceiver()
        first = self.startSender("cam", "--fps", "10", "--width", "160", "--height", "120")
        yield waitFor(
            lambda: self.stats().get("streams", {}).get("cam", {}).get("frames", 0) >= 3, 30,
            "the first receiver to take frames from cam",
        )
        second = self.spawn("sender-cam2", [
            "imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port2}", "--max-delay", "0.5",
            "--name", "cam", "--fps", "10", "--width", "160", "--height", "120",
        ])
        yield waitFor(lambda: first.status is not None, 30, "the first sender to be dropped")
        self.assertIn("code 9", first.text)
        self.assertEqual(self.client.get(keys.leaseKey("cam")).decode().split(":")[0], "r2")
        yield waitFor(
            lambda: self.stats().get("bus", {}).get("leases", {}).get("lost") == 1, 10,
            "the first receiver's stats file to count the lease it lost",
        )
        self.assertIsNone(second.status, second.text)
        second.transport.signalProcess("TERM")
        yield second.ended
