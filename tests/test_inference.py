"""
Tests for L{imageproto.features.inference}'s engine, scheduler, processor and
consumer: scheduling decided without threads (a
fake C{runInThread} whose Deferreds the test fires), and the thread side
(L{FrameProcessor}) called directly on real JPEGs.
"""

from __future__ import annotations

import os
import threading

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.features.inference.detectors import DetectorSpec, loadDetector
from imageproto.receiver.pipeline import ConsumerBase
from tests.helpers import FAKE_JPEG, RecordingChannel, receiverStack
from tests.helpers import DATA, InferenceThreads
from imageproto.features.inference.consumer import InferenceConsumer
from imageproto.features.inference.engine import InferenceService
from imageproto.features.inference.processor import FrameProcessor
from imageproto.features.inference.scheduler import InferenceEngine

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None


class Flow:
    """
    Records pauseProducing/resumeProducing.
    """

    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")


def frameOf(seq):
    return wire.Frame(seq, b"%d" % seq)


class EngineTests(SynchronousTestCase):
    """
    L{InferenceEngine} scheduling.
    """

    def engine(self, workers=1, **kwargs):
        self.threads = InferenceThreads()
        return InferenceEngine(
            lambda *a: None, self.threads, workers=workers, **kwargs
        )

    def submitted(self):
        return [call.args[1] for call in self.threads.calls]

    def test_resultCarriesDetections(self):
        """
        A processed frame fires its Deferred with a RESULT for its seq
        holding the detections and processing time.
        """
        engine = self.engine()
        d = engine.submit("s", frameOf(7))
        self.assertNoResult(d)
        self.threads.finish(0, [{"label": "x", "confidence": 1.0, "box": [1, 2, 3, 4]}])
        self.assertEqual(
            self.successResultOf(d),
            wire.Result(7, [{"label": "x", "confidence": 1.0, "box": [1, 2, 3, 4]}], 1234),
        )
        self.assertEqual(engine.stats("s").processed, 1)

    def test_boundedByWorkers(self):
        """
        No more than C{workers} frames are handed to threads at once; the
        next starts when one finishes.
        """
        engine = self.engine(workers=2)
        for seq in range(5):
            engine.submit("s", frameOf(seq))
        self.assertEqual(len(self.threads.calls), 2)
        self.assertEqual(engine.running, 2)
        self.threads.finish(0)
        self.assertEqual(len(self.threads.calls), 3)

    def test_finiteStreamEveryFrameInOrder(self):
        """
        Every frame of a finite stream is processed, in order.
        """
        engine = self.engine()
        ds = [engine.submit("s", frameOf(seq)) for seq in range(4)]
        for i in range(4):
            self.threads.finish(i)
        self.assertEqual(self.submitted(), [b"0", b"1", b"2", b"3"])
        self.assertEqual([self.successResultOf(d).seq for d in ds], [0, 1, 2, 3])

    def test_resultsDeliveredInOrder(self):
        """
        With two workers, a later frame that finishes first waits for the
        earlier one: results of a stream come back in order.
        """
        engine = self.engine(workers=2)
        order = []
        for seq in range(2):
            engine.submit("s", frameOf(seq)).addCallback(lambda r: order.append(r.seq))
        self.threads.finish(1)
        self.assertEqual(order, [])
        self.threads.finish(0)
        self.assertEqual(order, [0, 1])

    def test_liveStreamSkipsStaleFrames(self):
        """
        On a live stream, frames that arrive while the detector is busy
        replace one another: only the newest is processed; the others fire
        with C{None} (no RESULT) and are counted as skipped.
        """
        engine = self.engine()
        first = engine.submit("cam", frameOf(0), live=True)
        stale = [engine.submit("cam", frameOf(seq), live=True) for seq in (1, 2, 3)]
        newest = engine.submit("cam", frameOf(4), live=True)
        for d in stale:
            self.assertIsNone(self.successResultOf(d))
        self.threads.finish(0)
        self.assertEqual(self.successResultOf(first).seq, 0)
        self.assertEqual(self.submitted(), [b"0", b"4"])
        self.threads.finish(1)
        self.assertEqual(self.successResultOf(newest).seq, 4)
        self.assertEqual(engine.stats("cam").skipped, 3)
        self.assertEqual(engine.stats("cam").processed, 2)

    def test_streamsTakeTurns(self):
        """
        Waiting streams are served in turn, so a finite stream's backlog
        does not starve another stream.
        """
        engine = self.engine()
        for seq in range(3):
            engine.submit("a", frameOf(seq))
        engine.submit("b", frameOf(100))
        for i in range(3):
            self.threads.finish(i)
        # a's turn came first (it was waiting before b arrived), then b's,
        # then a's again, not all of a's backlog first.
        self.assertEqual(self.submitted(), [b"0", b"1", b"100", b"2"])

    def test_serialDetectorOneFramePerStream(self):
        """
        A serial detector never has two frames of one stream in flight,
        but different streams run side by side.
        """
        engine = self.engine(workers=2, serial=True)
        engine.submit("a", frameOf(0))
        engine.submit("a", frameOf(1))
        self.assertEqual(self.submitted(), [b"0"])
        engine.submit("b", frameOf(9))
        self.assertEqual(self.submitted(), [b"0", b"9"])
        self.threads.finish(0)
        self.assertEqual(self.submitted(), [b"0", b"9", b"1"])

    def test_backlogPausesTheConnection(self):
        """
        A finite stream with C{maxQueued} frames waiting pauses its
        connection, and resumes it when half of them have started.
        """
        engine = self.engine(maxQueued=4)
        flow = Flow()
        for seq in range(5):
            engine.submit("s", frameOf(seq), flow=flow, key="conn")
        self.assertEqual(flow.events, ["pause"])
        self.threads.finish(0)
        self.threads.finish(1)
        self.assertEqual(flow.events, ["pause", "resume"])

    def test_liveStreamNeverPauses(self):
        """
        A live stream never queues, so never pauses its connection.
        """
        engine = self.engine(maxQueued=2)
        flow = Flow()
        for seq in range(10):
            engine.submit("s", frameOf(seq), live=True, flow=flow)
        self.assertEqual(flow.events, [])

    def test_goneConnectionDropped(self):
        """
        A frame whose connection has gone by the time a worker is free is
        dropped unprocessed with C{None}.
        """
        engine = self.engine()
        engine.submit("s", frameOf(0))
        gone = engine.submit("t", frameOf(1), alive=lambda: False)
        self.threads.finish(0)
        self.assertIsNone(self.successResultOf(gone))
        self.assertEqual(len(self.threads.calls), 1)

    def test_detectorFailureAnswersEmpty(self):
        """
        A detector that raises is logged; the frame is answered with an
        empty RESULT so the sender's accounting completes, and counted as
        failed.
        """
        engine = self.engine()
        d = engine.submit("s", frameOf(3))
        self.threads.fail(0)
        self.assertEqual(self.successResultOf(d), wire.Result(3))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(engine.stats("s").failed, 1)

    def test_annotatedAsked(self):
        """
        C{reply="annotated"} asks the processor for the marked-up JPEG and
        the RESULT carries it; a per-frame C{annotated} overrides it.
        """
        engine = self.engine(reply="annotated")
        d = engine.submit("s", frameOf(0))
        engine.submit("s", frameOf(1), annotated=False)
        self.assertEqual([call.args[2] for call in self.threads.calls], [True])
        self.threads.finish(0, jpeg=b"JPEG")
        self.assertEqual(self.successResultOf(d).jpeg, b"JPEG")
        self.assertEqual(self.threads.calls[1].args[2], False)

    def test_idleQueuesForgotten(self):
        """
        Once a connection's frames are done, nothing of it is kept but the
        per-stream counters.
        """
        engine = self.engine()
        engine.submit("s", frameOf(0), key=object())
        self.threads.finish(0)
        self.assertEqual(engine._queues, {})
        self.assertEqual(engine.totals().processed, 1)


class ProcessorTests(SynchronousTestCase):
    """
    L{FrameProcessor}, the thread side, on real JPEGs.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        with open(os.path.join(DATA, "astronaut.jpg"), "rb") as f:
            self.jpeg = f.read()

    def test_facesAnnotated(self):
        """
        C{faces} on the astronaut portrait: one detection and a marked-up
        JPEG of the same size that differs from the original.
        """
        out = FrameProcessor(loadDetector("faces"))("s", self.jpeg, True)
        self.assertEqual([d["label"] for d in out.detections], ["face"])
        self.assertTrue(wire.isJpeg(out.jpeg))
        self.assertNotEqual(out.jpeg, self.jpeg)
        decoded = cv2.imdecode(__import__("numpy").frombuffer(out.jpeg, "uint8"), 1)
        self.assertEqual(decoded.shape, (256, 256, 3))

    def test_echoReturnsFrameUntouched(self):
        """
        C{echo} sends back the very bytes received and finds nothing.
        """
        out = FrameProcessor(loadDetector("echo"))("s", self.jpeg, True)
        self.assertEqual(out.detections, [])
        self.assertIs(out.jpeg, self.jpeg)

    def test_detectionsOnlyNoJpeg(self):
        """
        Without C{annotated}, no JPEG is encoded.
        """
        out = FrameProcessor(loadDetector("faces"))("s", self.jpeg, False)
        self.assertEqual(out.jpeg, b"")

    def test_undecodableRaises(self):
        """
        Bytes OpenCV cannot decode raise ValueError (the engine logs it).
        """
        self.assertRaises(
            ValueError,
            FrameProcessor(loadDetector("faces")),
            "s",
            b"\xff\xd8\xff" + b"\0" * 20 + b"\xff\xd9",
            False,
        )

    def test_oneDetectorPerThread(self):
        """
        Each thread builds its own detector instance.
        """
        made = []

        class Counting:
            def __init__(self):
                made.append(threading.get_ident())

            def detect(self, image, stream):
                return []

        processor = FrameProcessor(DetectorSpec("c", Counting))
        processor("s", self.jpeg, False)
        processor("s", self.jpeg, False)
        t = threading.Thread(target=processor, args=("s", self.jpeg, False))
        t.start()
        t.join()
        self.assertEqual(len(made), 2)
        self.assertNotEqual(made[0], made[1])


class ServiceTests(SynchronousTestCase):
    """
    L{InferenceService} owns a thread pool sized by C{workers}.
    """

    def test_startStop(self):
        """
        Starting starts the pool, stopping stops it.
        """
        service = InferenceService(
            DetectorSpec("e", object, echo=True), workers=2, reactor=MemoryReactorClock()
        )
        service.startService()
        self.assertTrue(service._pool.started)
        self.assertEqual(service._pool.max, 2)
        service.stopService()
        self.assertFalse(service._pool.started)


    def test_resultAfterAckToWatchersAndSender(self):
        """
        Through the receiver's pipeline, a frame's RESULT reaches the
        consumers that watch results and goes to the frame's channel after
        its ACK, even when the detector finishes before the frame is stored.
        """
        clock = MemoryReactorClock()
        threads = InferenceThreads()
        engine = InferenceEngine(lambda *a: None, threads)
        store = Deferred()

        class Storing(ConsumerBase):
            def frameReceived(self, frame):
                return store

        seen = []

        class Watching(ConsumerBase):
            def frameReceived(self, frame):
                pass

            def resultReady(self, frame, result):
                seen.append((frame.stream, result.seq))

        registry, pipeline = receiverStack(
            clock, [Storing(), InferenceConsumer(engine), Watching()]
        )
        stream = registry.attach("cam", wire.CAP_RESULTS, 1, object())
        channel = RecordingChannel()
        pipeline.frameReceived(stream, wire.Frame(3, FAKE_JPEG), channel)
        threads.finish(0, [])
        self.assertEqual(seen, [("cam", 3)])
        self.assertEqual((channel.acks, channel.results), ([], []))
        store.callback(None)
        self.assertEqual(channel.acks, [3])
        self.assertEqual([r.seq for r in channel.results], [3])

    def test_rejectedFrameGetsNoResult(self):
        """
        A frame the pipeline rejects in the end (it could not be stored)
        gets no RESULT, though the detector answered it first.
        """
        clock = MemoryReactorClock()
        threads = InferenceThreads()
        store = Deferred()

        class Storing(ConsumerBase):
            def frameReceived(self, frame):
                return store

        registry, pipeline = receiverStack(
            clock, [Storing(), InferenceConsumer(InferenceEngine(lambda *a: None, threads))]
        )
        stream = registry.attach("cam", wire.CAP_RESULTS, 1, object())
        channel = RecordingChannel()
        pipeline.frameReceived(stream, wire.Frame(3, FAKE_JPEG), channel)
        threads.finish(0, [])
        store.errback(OSError("disk full"))
        self.assertEqual(channel.results, [])
        self.assertEqual([seq for seq, _ in channel.rejects], [3])
        self.flushLoggedErrors(OSError)


class ReceiverTapTests(SynchronousTestCase):
    """
    The receiver tap's detection options (checked into
    L{imageproto.tap.config.ReceiverConfig}, attached by L{attachInference}
    through C{makeService}).
    """

    def parse(self, *args):
        from imageproto.tap.receiver import Options

        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", *args])
        return options

    def test_noDetector(self):
        """
        Without C{--detect} nothing is loaded and replies are off.
        """
        options = self.parse()
        self.assertIsNone(options.config.inference)
        self.assertEqual(options["reply"], "none")

    def test_detectDefaults(self):
        """
        C{--detect faces} loads the detector at parse time, replying with
        detections; C{makeService} wires it to the factory and announces
        SCAP_DETECT only.
        """
        from imageproto.tap.receiver import makeService

        options = self.parse("--detect", "faces", "--workers", "2")
        self.assertEqual(options.config.inference.detector.name, "faces")
        self.assertEqual(options.config.inference.reply, "detections")
        receiver = makeService(options, reactor=MemoryReactorClock())
        (service,) = [s for s in receiver if isinstance(s, InferenceService)]
        self.assertEqual(service.workers, 2)
        self.assertIn(service.consumer, receiver.pipeline.consumers)
        self.assertEqual(receiver.factory.capabilities & wire.SCAP_DETECT, wire.SCAP_DETECT)
        self.assertFalse(receiver.factory.capabilities & wire.SCAP_ANNOTATED)

    def test_detectorSectionNamesBackend(self):
        """
        The receiver's snapshot (the stats file and /metrics) gains a
        "detector" section naming the detector and its backend, and the
        service's start-up line names the backend too.
        """
        from twisted.logger import capturedLogs

        from imageproto.tap.receiver import makeService

        receiver = makeService(self.parse("--detect", "echo"), reactor=MemoryReactorClock())
        self.assertEqual(
            receiver.registry.snapshot()["detector"], {"name": "echo", "backend": None}
        )
        (service,) = [s for s in receiver if isinstance(s, InferenceService)]
        service.spec = DetectorSpec("onnx:m", object, backend="cv2.dnn")
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        from twisted.logger import formatEvent

        lines = [formatEvent(e) for e in events if "backend" in e]
        self.assertEqual(len(lines), 1)
        self.assertIn("on cv2.dnn", lines[0])

    def test_webViewerGetsDetections(self):
        """
        With C{--detect} and C{--web}, the viewer's latest-detections store
        is a consumer of the pipeline, which tells it every result, so the
        page can draw the boxes.
        """
        from imageproto.tap.receiver import makeService
        from imageproto.features.web.viewer import LatestDetections

        options = self.parse("--detect", "echo", "--web", "tcp:0:interface=127.0.0.1")
        receiver = makeService(options, reactor=MemoryReactorClock())
        kinds = [type(c) for c in receiver.pipeline.consumers]
        self.assertIn(InferenceConsumer, kinds)
        self.assertIn(LatestDetections, kinds)

    def test_annotatedCapability(self):
        """
        C{--reply annotated} announces SCAP_ANNOTATED too.
        """
        from imageproto.tap.receiver import makeService

        receiver = makeService(
            self.parse("--detect", "echo", "--reply", "annotated"), reactor=MemoryReactorClock()
        )
        self.assertTrue(receiver.factory.capabilities & wire.SCAP_ANNOTATED)

    def test_replyNoneAnnouncesNothing(self):
        """
        C{--reply none} runs the detector but announces no RESULTs.
        """
        from imageproto.tap.receiver import makeService

        receiver = makeService(
            self.parse("--detect", "echo", "--reply", "none"), reactor=MemoryReactorClock()
        )
        self.assertIn(InferenceConsumer, [type(c) for c in receiver.pipeline.consumers])
        self.assertFalse(receiver.factory.capabilities & wire.SCAP_DETECT)

    def test_errors(self):
        """
        A missing model, an unknown detector, a reply without a detector,
        a bad reply mode, zero workers and a bad ONNX size are usage errors
        naming the problem.
        """
        from twisted.python.usage import UsageError

        cases = [
            (["--detect", "onnx:/no/such/model.onnx"], "/no/such/model.onnx"),
            (["--detect", "dogs"], "dogs"),
            (["--reply", "annotated"], "needs --detect"),
            (["--detect", "echo", "--reply", "loud"], "--reply"),
            (["--detect", "echo", "--workers", "0"], "--workers"),
            (["--detect", "echo", "--onnx-size", "big"], "--onnx-size"),
        ]
        for args, fragment in cases:
            e = self.assertRaises(UsageError, self.parse, *args)
            self.assertIn(fragment, str(e))

    def test_compatPorts(self):
        """
        C{--compat-base64} and C{--compat-le32} add listening services
        with the compatibility factories.
        """
        from twisted.application.internet import StreamServerEndpointService

        from imageproto.protocol import compat
        from imageproto.tap.receiver import makeService

        options = self.parse("--compat-base64", "9001", "--compat-le32", "9002")
        self.assertEqual(options["compat-base64"], "tcp:9001")
        receiver = makeService(options, reactor=MemoryReactorClock())
        # Each compat factory sits behind its --compat-max-connections cap.
        protocols = [
            s.factory.wrappedFactory.protocol
            for s in receiver
            if isinstance(s, StreamServerEndpointService)
            and isinstance(getattr(s.factory, "wrappedFactory", None), compat.CompatFactory)
        ]
        self.assertEqual(
            protocols, [compat.Base64StreamProtocol, compat.LengthPrefixedImageProtocol]
        )


class ModuleTests(SynchronousTestCase):
    """
    Splitting the engine module kept its names.
    """

    def test_engineReexports(self):
        """
        Every name L{imageproto.features.inference.engine} exported before
        the split is still importable from it, as the same object.
        """
        from imageproto.features.inference import consumer, engine, processor, scheduler

        self.assertIs(engine.InferenceEngine, scheduler.InferenceEngine)
        self.assertIs(engine.InferenceStats, scheduler.InferenceStats)
        self.assertIs(engine.REPLY_MODES, scheduler.REPLY_MODES)
        self.assertIs(engine.FrameProcessor, processor.FrameProcessor)
        self.assertIs(engine.Processed, processor.Processed)
        self.assertIs(engine.InferenceConsumer, consumer.InferenceConsumer)
        for name in engine.__all__:
            self.assertTrue(hasattr(engine, name), name)
