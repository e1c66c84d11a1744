"""
The receiver's consumers hosted by a worker (imageproto.features.bus.hosted)
without Redis: the pipeline's outcomes, the streams' lifecycle and
statistics, and a group reader that acknowledges an entry only after its
consumers accepted the frame.  With a real Redis and real processes: see
tests.test_bus_redis.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from imageproto.features.bus import keys
from imageproto.features.bus.hosted import (
    ACCEPTED,
    DUPLICATE,
    REJECTED,
    BusStreams,
    GroupReader,
    HostedPipeline,
    receivedFrame,
)
from imageproto.receiver.frames import ALREADY_STORED, ReceivedFrame, StorageError
from imageproto.testing import FakeThreadRunner
from tests.helpers import FAKE_JPEG, RecordingConsumer


def _frame(seq, stream="cam", session=5, live=False, dropped=0):
    return ReceivedFrame(stream, seq, 100.0, 100.01, 100.02, FAKE_JPEG, dropped, live, session)


def _fields(seq, stream="cam", receiver="r1", **kw):
    return keys.frameFields(_frame(seq, stream, **kw), receiver)


class _Returning:
    def __init__(self, value):
        self.value = value

    def frameReceived(self, frame):
        if isinstance(self.value, Exception):
            raise self.value
        d = Deferred()
        d.callback(self.value)
        return d

    def close(self):
        pass


class HostedPipelineTests(SynchronousTestCase):
    def outcome(self, *consumers):
        return self.successResultOf(HostedPipeline(consumers).frameReceived(_frame(0)))

    def test_outcomes(self):
        """
        A frame every consumer took is accepted; one a consumer had already
        (ALREADY_STORED) is a duplicate; one a consumer could not store is
        rejected, with the consumer's StorageError not logged as a failure.
        """
        self.assertEqual(self.outcome(RecordingConsumer()), ACCEPTED)
        self.assertEqual(self.outcome(RecordingConsumer(), _Returning(ALREADY_STORED)), DUPLICATE)
        self.assertEqual(self.outcome(_Returning(StorageError("full", True))), REJECTED)
        self.assertEqual(self.outcome(_Returning(RuntimeError("bug"))), REJECTED)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_entryBecomesTheReceivedFrame(self):
        """
        A bus entry becomes the ReceivedFrame the receiver's consumers were
        given: the sender's times, the receiver's receive time, the session,
        liveness and the sender's dropped count.
        """
        frame = _frame(7, live=True, dropped=3)
        again = receivedFrame(keys.decodeFrame(keys.frameFields(frame, "r1")))
        self.assertEqual(again, frame)
        self.assertEqual(again.senderDropped, 3)


class BusStreamsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100.0)
        self.consumer = RecordingConsumer()
        self.streams = BusStreams(self.clock, HostedPipeline([self.consumer]), idleAfter=10.0)

    def deliver(self, frame, receiver="r1", outcome=ACCEPTED):
        self.streams.frameArrived(frame, receiver)
        self.streams.frameSettled(frame, outcome)

    def test_lifecycleFromFrames(self):
        """
        A stream starts with its first frame and stops after idleAfter
        seconds without one; a later frame starts it again.
        """
        self.deliver(_frame(0))
        self.deliver(_frame(1))
        self.clock.advance(9.0)
        self.streams.checkIdle()
        self.assertEqual(self.consumer.events, [("started", "cam")])
        self.clock.advance(1.0)
        self.streams.checkIdle()
        self.assertEqual(self.consumer.events, [("started", "cam"), ("stopped", "cam")])
        self.assertFalse(self.streams.snapshot()["streams"]["cam"]["connected"])
        self.deliver(_frame(2))
        self.assertEqual(self.consumer.events[-1], ("started", "cam"))

    def test_statisticsAsTheRegistryKeepsThem(self):
        """
        Each stream's snapshot is StreamStats' (frames, bytes, latency,
        duplicates, rejections, a new session counted as a reconnect), with
        the receiver that published it.
        """
        self.deliver(_frame(0))
        self.deliver(_frame(1))
        self.deliver(_frame(1), outcome=DUPLICATE)
        self.deliver(_frame(2), outcome=REJECTED)
        self.deliver(_frame(0, stream="door", session=9), receiver="r2")
        self.deliver(_frame(0, session=6))
        snapshot = self.streams.snapshot()["streams"]
        cam = snapshot["cam"]
        self.assertEqual(
            (cam["frames"], cam["bytes"], cam["duplicates"], cam["rejected"], cam["connections"]),
            (3, 3 * len(FAKE_JPEG), 1, 1, 2),
        )
        self.assertAlmostEqual(cam["latency_ms"]["p50"], 20.0, places=3)
        self.assertEqual((cam["receiver"], cam["connected"]), ("r1", True))
        self.assertEqual(snapshot["door"]["receiver"], "r2")


class _FakeLoop:
    group = "save"

    def __init__(self, batches):
        self.batches = list(batches)
        self.acknowledged = []

    @property
    def keys(self):
        # No stream left: the reader waits on the clock rather than reading
        # again at once (a real fetch blocks for up to its block time).
        return ["k"] if self.batches else []

    def fetch(self, count):
        return (self.batches.pop(0) if self.batches else []), 0

    def acknowledge(self, key, entryId):
        self.acknowledged.append(entryId)


class GroupReaderTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.threads = FakeThreadRunner()
        self.consumer = RecordingConsumer(hold=True)

    def reader(self, batches, **kw):
        self.loop = _FakeLoop(batches)
        streams = BusStreams(self.clock, HostedPipeline([self.consumer]))
        reader = GroupReader(self.loop, streams, self.threads, self.clock, **kw)
        reader.startService()
        self.addCleanup(reader.stopService)
        return reader

    def test_acknowledgedOnlyAfterTheConsumerAccepted(self):
        """
        An entry is acknowledged once the consumer's Deferred fires; one the
        consumer fails with a StorageError is left pending (to be claimed
        again), and counted as rejected.
        """
        reader = self.reader([[("k", b"1-0", _fields(0)), ("k", b"2-0", _fields(1))]])
        self.threads.runNext()  # the fetch
        self.assertEqual([f.seq for f in self.consumer.frames], [0, 1])
        self.threads.runAll()
        self.assertEqual(self.loop.acknowledged, [])
        self.consumer.pending[0].callback(None)
        self.consumer.pending[1].errback(StorageError("full", True))
        self.threads.runAll()
        self.assertEqual(self.loop.acknowledged, [b"1-0"])
        self.assertEqual((reader.counts["frames"], reader.counts["rejected"]), (1, 1))
        stats = reader.streams.snapshot()["streams"]["cam"]
        self.assertEqual((stats["frames"], stats["storage_errors"]), (1, 1))

    def test_readingWaitsWhileTooManyFramesAreWithTheConsumers(self):
        """
        With maxInFlight frames held by the consumers, no more are read
        until one is settled.
        """
        reader = self.reader(
            [[("k", b"1-0", _fields(0)), ("k", b"2-0", _fields(1))], [("k", b"3-0", _fields(2))]],
            maxInFlight=2,
        )
        self.threads.runNext()
        self.assertEqual(self.threads.calls, [])
        self.assertEqual(reader.inFlight, 2)
        self.consumer.pending[0].callback(None)
        self.threads.runAll()
        self.assertEqual([f.seq for f in self.consumer.frames], [0, 1, 2])

    def test_stopWaitsForFramesWithTheConsumersAndTheirAcks(self):
        """
        Stopping fires only once the read in progress returned, its frames
        were settled by the consumers and acknowledged.
        """
        reader = self.reader([[("k", b"1-0", _fields(0))]])
        stopped = reader.stopService()
        self.assertNoResult(stopped)
        self.threads.runNext()  # the fetch in progress returns a frame
        self.assertNoResult(stopped)
        self.consumer.pending[0].callback(None)
        self.assertNoResult(stopped)
        self.threads.runAll()  # its acknowledgement
        self.assertEqual(self.loop.acknowledged, [b"1-0"])
        self.successResultOf(stopped)

    def test_malformedEntryAcknowledged(self):
        """
        An entry that is not a frame is acknowledged (and counted), never
        handed to the consumers.
        """
        reader = self.reader([[("k", b"1-0", {b"stream": b"cam"})]])
        self.threads.runNext()
        self.threads.runNext()
        self.assertEqual(self.loop.acknowledged, [b"1-0"])
        self.assertEqual(self.consumer.frames, [])
        self.assertEqual(reader.counts["malformed"], 1)


class WorkerOptionsTests(SynchronousTestCase):
    def parse(self, *args):
        from imageproto.tap import worker

        options = worker.Options()
        options.parseOptions(["--bus", "redis://x:1/0", *args])
        return options

    def test_consumersWithoutDetector(self):
        """
        A worker may host consumers without --detect: each reads in its own
        group (save, record, view-NAME), or all in --group.
        """
        from imageproto.features.bus.hosting import BusConsumersService
        from imageproto.tap import worker

        directory = self.mktemp()
        options = self.parse("--save-dir", directory, "--record-dir", directory + "-rec",
                             "--web", "0", "--name", "w1")
        self.assertIsNone(options.config.detector)
        [service] = list(worker.makeService(options, Clock()))
        self.assertIsInstance(service, BusConsumersService)
        self.assertEqual([r.group for r in service.readers], ["save", "record", "view-w1"])
        options = self.parse("--save-dir", directory, "--web", "0", "--group", "archive")
        [service] = list(worker.makeService(options, Clock()))
        self.assertEqual([r.group for r in service.readers], ["archive"])
        [service] = list(worker.makeService(self.parse("--stats-file", directory + ".json"), Clock()))
        self.assertEqual([r.group for r in service.readers], ["stats"])

    def test_detectorAndConsumers(self):
        """
        --detect with a consumer runs both; --group then is ambiguous and
        refused; without either there is nothing to do.
        """
        from imageproto.features.bus.hosting import BusConsumersService
        from imageproto.features.bus.worker import WorkerService
        from imageproto.tap import worker

        directory = self.mktemp()
        options = self.parse("--detect", "echo", "--save-dir", directory)
        self.assertEqual(
            [type(s) for s in worker.makeService(options, Clock())],
            [WorkerService, BusConsumersService],
        )
        self.assertRaises(usage.UsageError, self.parse, "--detect", "echo", "--save-dir", directory,
                          "--group", "g")
        self.assertRaises(usage.UsageError, self.parse)
        self.assertRaises(usage.UsageError, self.parse, "--web", "0", "--record-format", "gif")
