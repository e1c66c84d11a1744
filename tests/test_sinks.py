"""
Tests for L{imageproto.receiver.consumers}.
"""

import os

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from imageproto.receiver.consumers import (
    CallbackSink,
    DecodingSink,
    IFrameSink,
    LatestFrameHub,
)
from tests.helpers import FakeThreads, makeJpeg, receivedFrame

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None


class ReceivedFrameTests(SynchronousTestCase):
    def test_latency(self):
        """
        C{latency} is receive time minus capture time.
        """
        self.assertAlmostEqual(receivedFrame().latency, 0.05)

    def test_reprHidesJpeg(self):
        """
        The JPEG bytes stay out of the repr.
        """
        self.assertNotIn("jpeg", repr(receivedFrame(jpeg=b"x" * 1000)))

    def test_decode(self):
        """
        C{decode} returns the BGR pixels of the JPEG.
        """
        if cv2 is None:
            raise self.skipTest("OpenCV is not installed")
        image = receivedFrame(jpeg=makeJpeg(16, 12, (0, 0, 255))).decode()
        self.assertEqual(image.shape, (12, 16, 3))
        blue, green, red = (int(c) for c in image[6, 8])
        self.assertLess(blue, 10)
        self.assertGreater(red, 245)

    def test_decodeGarbage(self):
        """
        C{decode} of bytes OpenCV cannot read raises L{ValueError}.
        """
        if cv2 is None:
            raise self.skipTest("OpenCV is not installed")
        self.assertRaises(ValueError, receivedFrame(jpeg=b"not a jpeg").decode)


class LatestFrameHubTests(SynchronousTestCase):
    def test_interface(self):
        """
        L{LatestFrameHub} provides L{IFrameSink}.
        """
        self.assertTrue(verifyObject(IFrameSink, LatestFrameHub()))

    def test_latest(self):
        """
        The hub keeps each stream's newest frame, and it outlives the stream.
        """
        hub = LatestFrameHub()
        self.assertIsNone(hub.latest("a"))
        first, second = receivedFrame("a", 0), receivedFrame("a", 1)
        other = receivedFrame("b", 5)
        for frame in (first, other, second):
            self.assertIsNone(hub.frameReceived(frame))
        hub.streamStopped("a")
        self.assertIs(hub.latest("a"), second)
        self.assertIs(hub.latest("b"), other)
        self.assertEqual(hub.names(), ["a", "b"])

    def test_subscribe(self):
        """
        A subscriber gets each new frame of its stream only, until it
        unsubscribes.
        """
        hub = LatestFrameHub()
        seen = []
        subscription = hub.subscribe("a", seen.append)
        frames = [receivedFrame("a", 0), receivedFrame("b", 0), receivedFrame("a", 1)]
        for frame in frames:
            hub.frameReceived(frame)
        self.assertEqual(seen, [frames[0], frames[2]])
        hub.unsubscribe(subscription)
        hub.unsubscribe(subscription)
        hub.frameReceived(receivedFrame("a", 2))
        self.assertEqual(len(seen), 2)

    def test_unsubscribeDuringCallback(self):
        """
        A subscriber may unsubscribe itself from its callback without
        disturbing the others.
        """
        hub = LatestFrameHub()
        seen = []
        subscriptions = []

        def once(frame):
            seen.append(("once", frame.seq))
            hub.unsubscribe(subscriptions[0])

        subscriptions.append(hub.subscribe("a", once))
        hub.subscribe("a", lambda frame: seen.append(("always", frame.seq)))
        hub.frameReceived(receivedFrame("a", 0))
        hub.frameReceived(receivedFrame("a", 1))
        self.assertEqual(
            sorted(seen), [("always", 0), ("always", 1), ("once", 0)]
        )

    def test_failingSubscriberDropped(self):
        """
        A subscriber whose callback raises is logged and unsubscribed; the
        others still get frames.
        """
        hub = LatestFrameHub()
        seen = []

        def broken(frame):
            raise RuntimeError("viewer went away")

        hub.subscribe("a", broken)
        hub.subscribe("a", seen.append)
        hub.frameReceived(receivedFrame("a", 0))
        hub.frameReceived(receivedFrame("a", 1))
        self.assertEqual([f.seq for f in seen], [0, 1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class CallbackSinkTests(SynchronousTestCase):
    def test_callback(self):
        """
        The callback gets each frame; a plain return value does not delay
        the ACK.
        """
        seen = []
        sink = CallbackSink(lambda frame: seen.append(frame) or 42)
        self.assertTrue(verifyObject(IFrameSink, sink))
        frame = receivedFrame()
        self.assertIsNone(sink.frameReceived(frame))
        self.assertEqual(seen, [frame])

    def test_deferredDelays(self):
        """
        A L{Deferred} returned by the callback is passed on, delaying the ACK.
        """
        d = succeed(None)
        sink = CallbackSink(lambda frame: d)
        self.assertIs(sink.frameReceived(receivedFrame()), d)


class DecodingSinkTests(SynchronousTestCase):
    def setUp(self):
        if cv2 is None:
            raise SkipTest("OpenCV is not installed")

    def test_decodedInThread(self):
        """
        The frame is decoded through C{runInThread}; the callback then gets
        the frame and its image, and the ACK waits for it.
        """
        threads = FakeThreads()
        seen = []
        sink = DecodingSink(lambda frame, image: seen.append((frame, image.shape)), threads)
        self.assertTrue(verifyObject(IFrameSink, sink))
        frame = receivedFrame(jpeg=makeJpeg(16, 12))
        d = sink.frameReceived(frame)
        self.assertEqual(seen, [])
        self.assertNoResult(d)
        threads.runAll()
        self.assertEqual(seen, [(frame, (12, 16, 3))])
        self.successResultOf(d)

    def test_undecodableFails(self):
        """
        A frame OpenCV cannot decode fails the Deferred (the pipeline
        rejects it) without calling the callback.
        """
        threads = FakeThreads()
        seen = []
        sink = DecodingSink(lambda frame, image: seen.append(frame), threads)
        d = sink.frameReceived(receivedFrame())
        threads.runAll()
        self.failureResultOf(d, ValueError)
        self.assertEqual(seen, [])
