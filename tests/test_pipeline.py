"""
Tests for L{imageproto.receiver.pipeline}: one way in for every frame, one
way back for every answer.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from tests.helpers import FAKE_JPEG, RecordingChannel, receiverStack
from tests.helpers import RecordingConsumer


class Answering(RecordingConsumer):
    """
    A consumer that answers frames (as a detector does).
    """

    answers = True


class PipelineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(50)
        self.quick = RecordingConsumer()
        self.slow = RecordingConsumer(hold=True)
        self.registry, self.pipeline = receiverStack(self.clock, [self.quick, self.slow])
        self.stream = self.registry.attach("cam", wire.CAP_LIVE, 4, object())
        self.channel = RecordingChannel()

    def send(self, seq, jpeg=FAKE_JPEG):
        return self.pipeline.frameReceived(
            self.stream, wire.Frame(seq, jpeg, 49.0, 49.5, 1), self.channel
        )

    def test_everyConsumerGetsTheSameFrame(self):
        """
        Each consumer is handed the frame as a L{ReceivedFrame} with its
        stream, times, session, liveness and channel.
        """
        self.send(7)
        [a], [b] = self.quick.frames, self.slow.frames
        self.assertIs(a, b)
        self.assertEqual(
            (a.stream, a.seq, a.captureTime, a.sendTime, a.receiveTime, a.session,
             a.live, a.senderDropped),
            ("cam", 7, 49.0, 49.5, 50.0, 4, True, 1),
        )
        self.assertIs(a.channel, self.channel)

    def test_metadataDecodedForEveryConsumer(self):
        """
        A frame's metadata reaches every consumer decoded, as one shared
        value; a frame without metadata has C{metadata} C{None}.
        """
        text = wire.encodeMetadata({"site": "door", "gps": [47.1, 8.5]})
        self.pipeline.frameReceived(
            self.stream, wire.Frame(1, FAKE_JPEG, 49.0, 49.5, 0, text), self.channel
        )
        self.send(2)
        [a, plain], [b, _] = self.quick.frames, self.slow.frames
        self.assertEqual(a.metadata, {"site": "door", "gps": [47.1, 8.5]})
        self.assertIs(a.metadata, b.metadata)
        self.assertIsNone(plain.metadata)
        self.pipeline.frameReceived(
            self.stream, wire.Frame(3, FAKE_JPEG, metadata='"just text"'), self.channel
        )
        self.assertEqual(self.quick.frames[-1].metadata, "just text")

    def test_ackWaitsForConsumersThatTakeTime(self):
        """
        The ACK goes out once every consumer that returned a Deferred has
        finished; only then is the frame counted.
        """
        d = self.send(0)
        self.assertEqual(self.channel.acks, [])
        self.assertEqual(self.registry.stats("cam").frames, 0)
        self.slow.pending[0].callback(None)
        self.assertEqual(self.channel.acks, [0])
        self.assertEqual(self.registry.stats("cam").frames, 1)
        self.assertIsNone(self.successResultOf(d))

    def test_settledAtOnceReturnsNone(self):
        """
        When no consumer takes time, the frame is acknowledged before
        C{frameReceived} returns, which returns C{None}.
        """
        registry, pipeline = receiverStack(self.clock, [self.quick])
        stream = registry.attach("cam", 0, 1, object())
        self.assertIsNone(pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG), self.channel))
        self.assertEqual(self.channel.acks, [0])

    def test_failedConsumerRejects(self):
        """
        A consumer's failure rejects the frame, is logged, and is not
        counted.
        """
        self.send(0)
        self.slow.pending[0].errback(OSError("disk full"))
        self.assertEqual(self.channel.rejects, [(0, "server could not store the frame")])
        self.assertEqual(self.registry.stats("cam").frames, 0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_notJpegRejected(self):
        """
        A payload that is not a JPEG is rejected, counted, and reaches no
        consumer.
        """
        self.assertIsNone(self.send(0, jpeg=b"GIF89a..."))
        self.assertEqual(self.channel.rejects, [(0, "payload is not a JPEG")])
        self.assertEqual(self.quick.frames, [])
        self.assertEqual(self.registry.stats("cam").rejected, 1)

    def test_resentFrameAcknowledgedOnce(self):
        """
        A frame already accepted is acknowledged again without reaching the
        consumers, and counted as a duplicate.
        """
        self.send(0)
        self.slow.pending[0].callback(None)
        self.send(0)
        self.assertEqual(self.channel.acks, [0, 0])
        self.assertEqual(len(self.quick.frames), 1)
        self.assertEqual(self.registry.stats("cam").duplicates, 1)

    def test_copyInFlightSharesOutcome(self):
        """
        A second copy arriving on another channel while the first is with
        the consumers is settled with the first copy's outcome.
        """
        other = RecordingChannel()
        self.send(0)
        self.pipeline.frameReceived(self.stream, wire.Frame(0, FAKE_JPEG), other)
        self.assertEqual(other.acks, [])
        self.slow.pending[0].errback(OSError("full"))
        self.assertEqual([seq for seq, _ in other.rejects], [0])
        self.flushLoggedErrors(OSError)

    def test_replyAfterAck(self):
        """
        An answer given before the frame is acknowledged waits for the ACK,
        then goes to the channel; watchers hear of it at once.
        """
        self.send(3)
        [frame] = self.quick.frames
        result = wire.Result(3, [], 10)
        frame.reply(result)
        self.assertEqual(self.quick.results, [(3, result)])
        self.assertEqual(self.channel.results, [])
        self.slow.pending[0].callback(None)
        self.assertEqual(self.channel.results, [result])
        frame.reply(wire.Result(3, [], 11))
        self.assertEqual(len(self.channel.results), 2)

    def test_replyNotToSender(self):
        """
        C{toSender=False} tells only the watchers.
        """
        registry, pipeline = receiverStack(self.clock, [self.quick])
        stream = registry.attach("cam", 0, 1, object())
        pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG), self.channel)
        self.quick.frames[0].reply(wire.Result(0), toSender=False)
        self.assertEqual(self.channel.results, [])
        self.assertEqual(len(self.quick.results), 1)

    def test_rejectedFrameNotAnswered(self):
        """
        A rejected frame's answers go nowhere.
        """
        self.send(0)
        [frame] = self.quick.frames
        self.slow.pending[0].errback(OSError("full"))
        frame.reply(wire.Result(0))
        self.assertEqual((self.channel.results, self.quick.results), ([], []))
        self.flushLoggedErrors(OSError)

    def test_answers(self):
        """
        C{answers} says whether some consumer answers frames.
        """
        self.assertFalse(self.pipeline.answers)
        self.pipeline.addConsumer(Answering())
        self.assertTrue(self.pipeline.answers)

    def test_lifecycleToEveryConsumer(self):
        """
        Stream starts and stops reach every consumer; one that raises is
        logged and the others still hear.
        """

        class Broken(RecordingConsumer):
            def streamStarted(self, name):
                raise RuntimeError("broken")

        after = RecordingConsumer()
        registry, pipeline = receiverStack(self.clock, [Broken(), after])
        protocol = object()
        stream = registry.attach("door", 0, 1, protocol)
        registry.detach(stream, protocol)
        self.assertEqual(after.events, [("started", "door"), ("stopped", "door")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_closeClosesConsumers(self):
        """
        C{close} closes every consumer and fires when all are done.
        """
        closing = Deferred()

        class Slow(RecordingConsumer):
            def close(self):
                return closing

        registry, pipeline = receiverStack(self.clock, [Slow()])
        d = pipeline.close()
        self.assertNoResult(d)
        closing.callback(None)
        self.successResultOf(d)
