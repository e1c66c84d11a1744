"""
The bus's logic without Redis or sockets: key naming and entry encoding,
the bounded map of frames awaiting answers, answer routing, and the
publisher's acknowledgement, retry, backpressure and drop decisions on a
L{Clock}.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.features.bus import keys
from imageproto.features.bus.answers import AnswerReader, AwaitingAnswers
from imageproto.features.bus.publisher import BusConfig, BusPublisher
from imageproto.receiver.pipeline import ReceivedFrame
from imageproto.testing import FakeThreadRunner
from tests.helpers import FAKE_JPEG, RecordingChannel, receiverStack


def frame(seq, stream="cam", session=7, live=False):
    return ReceivedFrame(stream, seq, 1.5, 1.75, 2.0, FAKE_JPEG, 0, live, session)


class KeysTests(SynchronousTestCase):
    def test_framesKeyHashTagIsTheStreamName(self):
        """
        A stream's frames key holds its name as the Cluster hash tag, and
        the name is read back from the key.
        """
        self.assertEqual(keys.framesKey("cam-1.a"), "imageproto:frames:{cam-1.a}")
        self.assertEqual(keys.streamOfKey(b"imageproto:frames:{cam-1.a}"), "cam-1.a")
        self.assertRaises(ValueError, keys.streamOfKey, "imageproto:results:x")

    def test_resultsKeyPerReceiver(self):
        """
        Each receiver reads answers from its own results stream.
        """
        self.assertEqual(keys.resultsKey("r1"), "imageproto:results:r1")

    def test_entryTimeIsTheIdsMilliseconds(self):
        """
        An entry ID's first part is the server's milliseconds at XADD.
        """
        self.assertEqual(keys.entryTime(b"1700000000123-4"), 1700000000.123)

    def test_frameRoundTrip(self):
        """
        A frame's bus entry (as redis-py returns it: bytes keys and values)
        decodes to the same stream, session, seq, times, receiver and JPEG.
        """
        fields = keys.frameFields(frame(3, live=True), "r1", annotated=True)
        raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
        decoded = keys.decodeFrame(raw)
        self.assertEqual(
            (decoded.stream, decoded.session, decoded.seq, decoded.receiver),
            ("cam", 7, 3, "r1"),
        )
        self.assertEqual((decoded.captureTime, decoded.sendTime, decoded.receiveTime), (1.5, 1.75, 2.0))
        self.assertTrue(decoded.live)
        self.assertTrue(decoded.annotated)
        self.assertEqual(decoded.jpeg, FAKE_JPEG)
        self.assertEqual(decoded.key, ("cam", 7, 3))

    def test_malformedFrame(self):
        """
        An entry missing a field is a ValueError.
        """
        self.assertRaises(ValueError, keys.decodeFrame, {b"stream": b"cam"})

    def test_answerRoundTrip(self):
        """
        A RESULT travels wire-encoded and comes back equal, tied to the
        frame's stream, session and seq; a skip marker has no result.
        """
        busFrame = keys.decodeFrame(keys.frameFields(frame(9), "r1"))
        result = wire.Result(9, [{"label": "face", "confidence": 0.5, "box": [1, 2, 3, 4]}], 12)
        answer = keys.decodeAnswer(keys.resultFields(busFrame, result, "w1"))
        self.assertEqual(answer.key, ("cam", 7, 9))
        self.assertEqual(answer.result, result)
        self.assertEqual(answer.worker, "w1")
        skipped = keys.decodeAnswer(keys.skippedFields(busFrame, "w1"))
        self.assertIsNone(skipped.result)
        self.assertRaises(ValueError, keys.decodeAnswer, {b"stream": b"cam"})


class AwaitingAnswersTests(SynchronousTestCase):
    def test_bounded(self):
        """
        Beyond its limit the oldest waiting frame is forgotten and counted.
        """
        awaiting = AwaitingAnswers(limit=2)
        for seq in range(3):
            awaiting.add(frame(seq))
        self.assertEqual(len(awaiting), 2)
        self.assertEqual(awaiting.forgotten, 1)
        self.assertIsNone(awaiting.take(("cam", 7, 0)))
        self.assertEqual(awaiting.take(("cam", 7, 2)).seq, 2)
        self.assertIsNone(awaiting.take(("cam", 7, 2)))


class AnswerReaderTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.awaiting = AwaitingAnswers()
        self.publisher = BusPublisher(lambda entries: succeed([]), "r1", self.clock, self.awaiting)
        self.registry, self.pipeline = receiverStack(self.clock, [self.publisher])
        self.stream = self.registry.attach("cam", 0, 7, object())
        self.channel = RecordingChannel()

    def answer(self, seq, result=True, session=7):
        busFrame = keys.decodeFrame(keys.frameFields(frame(seq, session=session), "r1"))
        if result:
            return (b"1-0", keys.resultFields(busFrame, wire.Result(seq, [], 5), "w"))
        return (b"1-0", keys.skippedFields(busFrame, "w"))

    def test_answersOnceAndDropsLateDuplicate(self):
        """
        The frame's sender gets the worker's RESULT after its ACK; a second
        answer to the same frame (a claimed frame done twice) is dropped
        and counted.
        """
        reader = AnswerReader(self.awaiting)
        self.pipeline.frameReceived(self.stream, wire.Frame(4, FAKE_JPEG, 1.0), self.channel)
        self.assertEqual(self.channel.acks, [4])
        reader.entriesReceived([self.answer(4), self.answer(4)])
        self.assertEqual([r.seq for r in self.channel.results], [4])
        self.assertEqual((reader.answered, reader.unmatched), (1, 1))

    def test_otherSessionIsNotAnswered(self):
        """
        An answer for the same seq of another session answers nothing.
        """
        reader = AnswerReader(self.awaiting)
        self.pipeline.frameReceived(self.stream, wire.Frame(4, FAKE_JPEG, 1.0), self.channel)
        reader.entriesReceived([self.answer(4, session=8)])
        self.assertEqual(self.channel.results, [])
        self.assertEqual(reader.unmatched, 1)

    def test_skippedFrameIsForgotten(self):
        """
        A frame a worker skipped gets no RESULT and no longer waits.
        """
        reader = AnswerReader(self.awaiting)
        self.pipeline.frameReceived(self.stream, wire.Frame(4, FAKE_JPEG, 1.0), self.channel)
        reader.entriesReceived([self.answer(4, result=False)])
        self.assertEqual(self.channel.results, [])
        self.assertEqual((reader.skipped, len(self.awaiting)), (1, 0))


class PublisherTests(SynchronousTestCase):
    """
    The publisher inside a real pipeline; Redis is a list of Deferreds the
    test fires.
    """

    def setUp(self):
        self.clock = Clock()
        self.calls = []
        self.publisher = BusPublisher(
            self.publish, "r1", self.clock, AwaitingAnswers(),
            maxBacklog=4, maxLive=2, batch=8, retryDelay=0.1, maxRetryDelay=0.4,
        )
        self.registry, self.pipeline = receiverStack(self.clock, [self.publisher])

    def publish(self, entries):
        d = Deferred()
        self.calls.append((entries, d))
        return d

    def attach(self, name="cam", live=False):
        return self.registry.attach(name, wire.CAP_LIVE if live else 0, 7, object())

    def send(self, stream, seq, channel):
        self.pipeline.frameReceived(stream, wire.Frame(seq, FAKE_JPEG, 1.0), channel)

    def test_finiteAckWaitsForXadd(self):
        """
        A finite frame is acknowledged only once its XADD succeeded; it
        goes to its stream's key, untrimmed, with the receiver's id.
        """
        stream, channel = self.attach(), RecordingChannel()
        self.send(stream, 0, channel)
        self.assertEqual(channel.acks, [])
        [(entries, d)] = self.calls
        key, fields, maxlen = entries[0]
        self.assertEqual((key, maxlen, fields["receiver"], fields["seq"]), ("imageproto:frames:{cam}", None, "r1", "0"))
        d.callback([b"1-0"])
        self.assertEqual(channel.acks, [0])
        self.assertEqual(self.publisher.snapshot()["published"], 1)

    def test_finiteFramesWaitWhileRedisIsDownAndGoWhenBack(self):
        """
        While XADD fails, finite frames stay unacknowledged and are retried
        with growing delays; once Redis answers they are acknowledged, in
        order, none lost.
        """
        stream, channel = self.attach(), RecordingChannel()
        self.send(stream, 0, channel)
        self.send(stream, 1, channel)
        self.calls.pop()[1].errback(ConnectionError("down"))
        self.assertFalse(self.publisher.up)
        self.assertEqual(self.calls, [])
        self.clock.advance(0.1)
        self.calls.pop()[1].errback(ConnectionError("down"))
        self.clock.advance(0.1)
        self.assertEqual(self.calls, [], "the second retry waits twice as long")
        self.clock.advance(0.1)
        entries, d = self.calls.pop()
        self.assertEqual([f["seq"] for _, f, _ in entries], ["0", "1"])
        self.assertEqual(channel.acks, [])
        d.callback([b"1-0", b"1-1"])
        self.assertEqual(channel.acks, [0, 1])
        self.assertTrue(self.publisher.up)

    def test_backlogPausesFiniteSenders(self):
        """
        Past maxBacklog finite frames not yet in Redis, reading from their
        senders pauses; it resumes once the backlog is down to half.
        """
        stream, channel = self.attach(), RecordingChannel()
        for seq in range(5):
            self.send(stream, seq, channel)
        self.assertEqual(channel.paused, {"bus"})
        self.calls.pop(0)[1].callback([b"1-0"])
        self.assertEqual(channel.paused, {"bus"}, "4 still wait")
        self.calls.pop(0)[1].callback([b"1-1"] * 4)
        self.assertEqual(channel.paused, set())
        self.assertEqual(channel.acks, [0, 1, 2, 3, 4])

    def test_liveFramesAckedAtOnceAndDroppedOldestFirst(self):
        """
        Live frames are acknowledged at once; while the publisher is behind
        at most maxLive wait and the oldest go, counted; live streams are
        trimmed by MAXLEN.
        """
        stream, channel = self.attach(live=True), RecordingChannel()
        for seq in range(5):
            self.send(stream, seq, channel)
        self.assertEqual(channel.acks, [0, 1, 2, 3, 4])
        self.assertEqual(channel.paused, set())
        # Frame 0 went out at once; 1 and 2 were dropped for 3 and 4.
        entries, d = self.calls.pop()
        self.assertEqual(entries[0][2], self.publisher.liveLength)
        d.errback(ConnectionError("down"))
        # 0 came back in front, beyond the bound: dropped too.
        self.clock.advance(0.1)
        entries, d = self.calls.pop()
        self.assertEqual([f["seq"] for _, f, _ in entries], ["3", "4"])
        d.callback([b"1-0", b"1-1"])
        snapshot = self.publisher.snapshot()
        self.assertEqual((snapshot["published"], snapshot["live_dropped"]), (2, 3))
        self.assertEqual(snapshot["per_stream"]["cam"]["live_dropped"], 3)
        self.assertEqual(len(self.publisher.awaiting), 2, "dropped frames await no answer")

    def test_closeStopsRetrying(self):
        """
        After close no retry is scheduled and paused senders are resumed.
        """
        stream, channel = self.attach(), RecordingChannel()
        for seq in range(5):
            self.send(stream, seq, channel)
        self.calls.pop()[1].errback(ConnectionError("down"))
        self.publisher.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(channel.paused, set())


class OptionsTests(SynchronousTestCase):
    def test_receiverOptions(self):
        """
        --bus takes redis://, rediss:// (a password in the URL) and makes a
        BusConfig; without --bus there is none.
        """
        from imageproto.tap.receiver import Options

        options = Options()
        options.parseOptions(["--bus", "rediss://:secret@redis.example:6380/2", "--bus-id", "r1"])
        config = options.config.bus
        self.assertEqual((config.url, config.receiverId, config.replies), ("rediss://:secret@redis.example:6380/2", "r1", True))
        options = Options()
        options.parseOptions([])
        self.assertIsNone(options.config.bus)

    def test_badReceiverOptions(self):
        """
        A URL of another scheme, --detect beside --bus, and a bad id are
        usage errors.
        """
        from imageproto.tap.receiver import Options

        for args in (
            ["--bus", "http://x"],
            ["--bus", "redis://x", "--detect", "echo"],
            ["--bus", "redis://x", "--bus-id", "a b"],
            ["--bus", "redis://x", "--bus-backlog", "0"],
        ):
            self.assertRaises(usage.UsageError, Options().parseOptions, args)

    def test_workerOptions(self):
        """
        imageproto-worker needs --bus and --detect and makes a WorkerService.
        """
        from imageproto.features.bus.worker import WorkerService
        from imageproto.tap import worker

        self.assertRaises(usage.UsageError, worker.Options().parseOptions, ["--detect", "echo"])
        self.assertRaises(usage.UsageError, worker.Options().parseOptions, ["--bus", "redis://x"])
        options = worker.Options()
        options.parseOptions(["--bus", "redis://x:1/0", "--detect", "echo", "--workers", "3",
                              "--claim-after", "2", "--max-age", "0.5", "--name", "w1"])
        config = options.config
        self.assertEqual((config.workers, config.claimAfter, config.maxAge, config.name), (3, 2.0, 0.5, "w1"))
        [service] = list(worker.makeService(options, Clock()))
        self.assertIsInstance(service, WorkerService)


class MetricsTests(SynchronousTestCase):
    def test_busSectionExposed(self):
        """
        /metrics shows the bus: frames published, live frames dropped,
        publish latency, stream length, pending entries and the oldest
        one's age per group, and the workers seen.
        """
        from imageproto.features.web.metrics import ReceiverMetrics

        bus = {
            "up": True,
            "published": 3,
            "per_stream": {"cam": {"published": 3, "live_dropped": 2}},
            "publish_latency_ms": {"p50": 1.5, "p95": 2.0, "p99": None},
            "backlog": {"finite": 1, "live": 0},
            "answered": 3,
            "redis": {"streams": {"cam": {"length": 4, "groups": {"detect": {
                "pending": 2, "oldest_pending_age_s": 0.25}}}}},
            "workers": {"w1": 0.5, "w2": 1.0},
        }
        text = ReceiverMetrics(lambda: {"streams": {}, "bus": bus}).render().decode()
        for line in (
            'imageproto_bus_published_frames_total{stream="cam"} 3.0',
            'imageproto_bus_live_dropped_frames_total{stream="cam"} 2.0',
            'imageproto_bus_publish_latency_seconds{quantile="0.5"} 0.0015',
            'imageproto_bus_stream_length{stream="cam"} 4.0',
            'imageproto_bus_pending_entries{group="detect",stream="cam"} 2.0',
            'imageproto_bus_oldest_pending_age_seconds{group="detect",stream="cam"} 0.25',
            "imageproto_bus_workers 2.0",
            "imageproto_bus_up 1.0",
        ):
            self.assertIn(line, text)
        self.assertNotIn("imageproto_bus", ReceiverMetrics(lambda: {"streams": {}}).render().decode())


class _FakeLink:
    def __init__(self):
        self.published = []
        self.reads = []
        # The leases' calls wait here (no stream attaches in these tests).
        self.runInThread = FakeThreadRunner()
        self.client = None

    def start(self):
        pass

    def stop(self):
        pass

    def publish(self, entries):
        self.published.append(entries)
        return succeed([b"1-0"] * len(entries))

    def readAnswers(self, key, after, block):
        d = Deferred()
        self.reads.append((key, after, d))
        return d

    def observe(self, key):
        return succeed({"streams": {}, "workers": {"w1": 0.1}, "results_length": 0})


class BusServiceTests(SynchronousTestCase):
    def setUp(self):
        from imageproto.features.bus.service import BusService

        self.clock = Clock()
        self.link = _FakeLink()
        self.service = BusService(
            BusConfig("redis://x", "r1", answerTimeout=10.0), self.clock, link=self.link
        )
        self.registry, self.pipeline = receiverStack(self.clock, [self.service.publisher])
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_readsItsResultsStreamAndAnswers(self):
        """
        The service reads imageproto:results:<id> from the start, answers
        the waiting frame and reads on after the last entry's ID.
        """
        stream = self.registry.attach("cam", 0, 7, object())
        channel = RecordingChannel()
        self.pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG, 1.0), channel)
        key, after, d = self.link.reads.pop()
        self.assertEqual((key, after), ("imageproto:results:r1", b"0-0"))
        busFrame = keys.decodeFrame(self.link.published[0][0][1])
        d.callback([(b"5-1", keys.resultFields(busFrame, wire.Result(0), "w1"))])
        self.assertEqual([r.seq for r in channel.results], [0])
        self.assertEqual(self.link.reads[-1][1], b"5-1")
        snapshot = self.service.snapshot()
        self.assertEqual((snapshot["answered"], snapshot["workers"]), (1, {"w1": 0.1}))

    def test_overdueFiniteFrameRepublishedThenForgotten(self):
        """
        A finite frame with no answer after --bus-answer-timeout is
        published again (Redis may have lost it), at most three times; then
        it is forgotten and counted.
        """
        stream = self.registry.attach("cam", 0, 7, object())
        self.pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG, 1.0), RecordingChannel())
        self.assertEqual(len(self.link.published), 1)
        self.clock.advance(9)
        self.assertEqual(len(self.link.published), 1)
        for _ in range(40):
            self.clock.advance(1)
        self.assertEqual(len(self.link.published), 4)
        snapshot = self.service.snapshot()
        self.assertEqual((snapshot["republished"], snapshot["forgotten"], snapshot["awaiting"]), (3, 1, 0))


class ShardsTests(SynchronousTestCase):
    """
    L{imageproto.features.bus.shards}: where a stream lives when --bus names
    several Redis servers.
    """

    def test_keySlotIsRedisClusters(self):
        """
        keySlot is Redis Cluster's: CRC16/XMODEM of the hash tag (when it is
        not empty) modulo 16384, as the Cluster specification's examples and
        redis-py's own key_slot say.
        """
        from imageproto.features.bus.shards import crc16, keySlot

        self.assertEqual(crc16(b"123456789"), 0x31C3)
        self.assertEqual(keySlot("foo"), 12182)
        self.assertEqual(keySlot("{user1000}.following"), keySlot("{user1000}.followers"))
        self.assertEqual(keySlot("foo{}{bar}"), keySlot("foo{}{bar}".encode()))
        self.assertEqual(keySlot("foo{{bar}}zap"), keySlot("{bar"))
        self.assertEqual(keySlot(keys.framesKey("cam")), keySlot("cam"))
        try:
            from redis.crc import key_slot
        except ImportError:  # pragma: no cover
            return
        for key in (b"foo", b"foo{}{bar}", b"foo{{bar}}zap", b"imageproto:frames:{door-7}"):
            self.assertEqual(keySlot(key), key_slot(key), key)

    def test_shardOfIsStableAndSpreads(self):
        """
        A stream's server depends on its name and the number of servers
        only; many names land on every server.
        """
        from imageproto.features.bus.shards import shardOf

        names = [f"cam-{i}" for i in range(64)]
        self.assertEqual(
            [shardOf(n, 3) for n in names], [shardOf(n, 3) for n in names]
        )
        self.assertEqual({shardOf(n, 3) for n in names}, {0, 1, 2})
        self.assertEqual({shardOf(n, 1) for n in names}, {0})
        self.assertEqual((shardOf("clip-0", 2), shardOf("clip-1", 2)), (1, 0))

    def test_shardedPublishSplitsAndKeepsOrder(self):
        """
        A batch goes to each stream's server, and the entry IDs come back in
        the batch's order.
        """
        from imageproto.features.bus.shards import ShardedPublish, shardOf

        links = [_FakeLink(), _FakeLink()]
        links[0].publish = lambda entries: succeed([f"a{i}" for i in range(len(entries))])
        sent = []
        links[1].publish = lambda entries: (sent.append(entries), succeed(["b0", "b1"]))[1]
        names = ["clip-0", "clip-1", "clip-2"]  # servers 1, 0, 1
        entries = [(keys.framesKey(n), {"n": n}, None) for n in names]
        ids = self.successResultOf(ShardedPublish(links)(entries))
        self.assertEqual(ids, ["b0", "a0", "b1"])
        self.assertEqual([e[1]["n"] for e in sent[0]], ["clip-0", "clip-2"])
        self.assertEqual([shardOf(n, 2) for n in names], [1, 0, 1])

    def test_shardedPublishFailsWhenOneServerFails(self):
        """
        A batch fails, with the failing server's error, when one server
        fails (the publisher then retries the whole batch).
        """
        from twisted.internet.defer import fail

        from imageproto.features.bus.shards import ShardedPublish

        links = [_FakeLink(), _FakeLink()]
        links[1].publish = lambda entries: fail(ConnectionError("server 1 down"))
        entries = [(keys.framesKey(n), {}, None) for n in ("clip-0", "clip-1")]
        failure = self.failureResultOf(ShardedPublish(links)(entries), ConnectionError)
        self.assertIn("server 1 down", failure.getErrorMessage())

    def test_serviceReadsAnswersOnEveryServer(self):
        """
        With two servers the receiver publishes each stream on its own
        server and reads its results stream on both, answering frames
        whose RESULT came from either.
        """
        from imageproto.features.bus.service import BusService

        clock = Clock()
        links = [_FakeLink(), _FakeLink()]
        config = BusConfig("redis://a", "r1", shards=("redis://b",))
        self.assertEqual(config.urls, ("redis://a", "redis://b"))
        service = BusService(config, clock, links=links)
        registry, pipeline = receiverStack(clock, [service.publisher])
        service.startService()
        self.addCleanup(service.stopService)
        channels = {}
        for name in ("clip-0", "clip-1"):
            stream = registry.attach(name, 0, 7, object())
            channels[name] = RecordingChannel()
            pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG, 1.0), channels[name])
        published = [[keys.streamOfKey(e[0]) for batch in link.published for e in batch]
                     for link in links]
        self.assertEqual(published, [["clip-1"], ["clip-0"]])
        for index, link in enumerate(links):
            key, after, d = link.reads.pop()
            self.assertEqual((key, after), ("imageproto:results:r1", b"0-0"))
            busFrame = keys.decodeFrame(link.published[0][0][1])
            d.callback([(b"5-1", keys.resultFields(busFrame, wire.Result(0), f"w{index}"))])
            self.assertEqual(link.reads[-1][1], b"5-1")
        self.assertEqual([r.seq for r in channels["clip-0"].results], [0])
        self.assertEqual([r.seq for r in channels["clip-1"].results], [0])
        self.assertEqual(service.snapshot()["answered"], 2)

    def test_observationsMerged(self):
        """
        The monitor's view of several servers joins their streams and
        workers (a worker seen on both counts once, at its latest
        heartbeat), sums the results lengths and keeps the first error.
        """
        from imageproto.features.bus.service import _merged

        merged = _merged([
            {"streams": {"a": {"length": 1}}, "workers": {"w1": 0.5}, "results_length": 2},
            {"streams": {"b": {"length": 3}}, "workers": {"w1": 0.2, "w2": 1.0},
             "results_length": 4},
            {"error": "Connection refused"},
        ])
        self.assertEqual(merged["streams"], {"a": {"length": 1}, "b": {"length": 3}})
        self.assertEqual(merged["workers"], {"w1": 0.2, "w2": 1.0})
        self.assertEqual((merged["results_length"], merged["error"]), (6, "Connection refused"))
        single = {"streams": {}, "workers": {}, "results_length": 0}
        self.assertIs(_merged([single]), single)

    def test_options(self):
        """
        --bus with several comma-separated URLs gives the receiver a
        BusConfig with every server in order, and the worker one
        WorkerService per server; a bad or repeated URL is a usage error.
        """
        from imageproto.features.bus.worker import WorkerService
        from imageproto.tap import worker
        from imageproto.tap.receiver import Options

        options = Options()
        options.parseOptions(["--bus", "redis://a:1/0, redis://b:2/0", "--bus-id", "r1"])
        self.assertEqual(options.config.bus.urls, ("redis://a:1/0", "redis://b:2/0"))
        for value in ("redis://a:1/0,http://b", "redis://a:1/0,redis://a:1/0", ","):
            self.assertRaises(usage.UsageError, Options().parseOptions, ["--bus", value])
        options = worker.Options()
        options.parseOptions(["--bus", "redis://a:1/0,redis://b:2/0", "--detect", "echo"])
        services = list(worker.makeService(options, Clock()))
        self.assertEqual([type(s) for s in services], [WorkerService, WorkerService])
        self.assertEqual([s.config.url for s in services], ["redis://a:1/0", "redis://b:2/0"])


class WorkerBannerTests(SynchronousTestCase):
    def test_workerLogNamesBackend(self):
        """
        The worker says at start which detector runs, on which backend, and
        how many Redis servers it reads.
        """
        from twisted.logger import capturedLogs, formatEvent

        from imageproto.features.bus.worker import WorkerConfig
        from imageproto.features.inference.detectors import DetectorSpec
        from imageproto.tap.worker import _WorkerServices

        detector = DetectorSpec("onnx:/m.onnx", object, backend="onnxruntime/CPUExecutionProvider")
        services = _WorkerServices(WorkerConfig("redis://a", detector, name="w1"))
        with capturedLogs() as events:
            services.startService()
        lines = [formatEvent(e) for e in events if "backend" in e]
        self.assertEqual(
            lines,
            ["worker w1: detector onnx:/m.onnx on onnxruntime/CPUExecutionProvider, "
             "reading 0 Redis server(s)"],
        )
