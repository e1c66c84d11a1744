"""
Tests for L{imageproto.protocol.compat}: the two compatibility protocols driven the
way PROTOCOL.md describes them, over StringTransport and a real
L{StreamRegistry}, plus one real-socket client per protocol.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
from datetime import datetime, timezone

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto import wire
from imageproto.protocol import compat, compatfields
from imageproto.protocol.compat import (
    Base64StreamProtocol,
    CompatFactory,
    LengthPrefixedImageProtocol,
)
from imageproto.features.inference.consumer import InferenceConsumer
from imageproto.features.inference.processor import Processed
from imageproto.features.inference.scheduler import InferenceEngine
from imageproto.receiver.consumers import CallbackSink
from tests.helpers import readJpeg, receiverStack

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None



def base64Frame(jpeg: bytes, when: datetime) -> bytes:
    """
    One frame as PROTOCOL.md describes it, built independently of
    L{imageproto.protocol.compat}.
    """
    payload = base64.b64encode(jpeg)
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f").encode("ascii")
    return str(len(payload)).encode("ascii").ljust(64) + payload + stamp.ljust(64)


def le32(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def syncThread(f, *args):
    try:
        return succeed(f(*args))
    except Exception:
        return fail()


class Harness:
    """
    A registry that records what reaches its sinks, and a compat factory.
    """

    def __init__(self, protocol, inference=None, maxMessageBytes=1 << 20):
        self.clock = MemoryReactorClock()
        self.frames = []
        consumers = [CallbackSink(self.frames.append)]
        if inference is not None:
            consumers.append(inference)
        self.registry, self.pipeline = receiverStack(self.clock, consumers)
        self.factory = CompatFactory(
            protocol,
            self.registry,
            self.pipeline,
            self.clock,
            maxMessageBytes=maxMessageBytes,
            runInThread=syncThread,
        )

    def connect(self, port=40000):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        proto.makeConnection(transport)
        return proto, transport


class PureFieldTests(SynchronousTestCase):
    """
    Field parsers and stream naming.
    """

    def test_streamNameObeysTheRule(self):
        """
        Peer addresses become valid stream names; IPv6 colons are replaced.
        """
        self.assertEqual(compatfields.streamNameFor("b64", "127.0.0.1", 5000), "b64-127.0.0.1-5000")
        self.assertEqual(compatfields.streamNameFor("le32", "::1"), "le32-__1")

    def test_lengthField(self):
        """
        A space-padded decimal parses; text, zero and oversize are refused.
        """
        self.assertEqual(compatfields.parseLengthField(b"123".ljust(64), 1000), 123)
        for bad in (b"12a".ljust(64), b"0".ljust(64), b"1001".ljust(64), b" " * 64):
            self.assertRaises(compatfields.CompatError, compatfields.parseLengthField, bad, 1000)

    def test_timestampField(self):
        """
        The UTC timestamp parses to epoch seconds with microseconds.
        """
        when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
        field = when.strftime("%Y-%m-%d %H:%M:%S.%f").encode().ljust(64)
        self.assertAlmostEqual(compatfields.parseTimestampField(field), when.timestamp(), 6)
        self.assertRaises(
            compatfields.CompatError, compatfields.parseTimestampField, b"yesterday".ljust(64)
        )

    def test_compatReexports(self):
        """
        The field parsers moved to L{imageproto.protocol.compatfields} are
        still importable from L{imageproto.protocol.compat}.
        """
        for name in compatfields.__all__:
            self.assertIs(getattr(compat, name), getattr(compatfields, name))
        for name in compat.__all__:
            self.assertTrue(hasattr(compat, name), name)


class Base64Tests(SynchronousTestCase):
    """
    L{Base64StreamProtocol} over StringTransport.
    """

    def setUp(self):
        self.h = Harness(Base64StreamProtocol)
        self.jpeg = readJpeg()
        self.when = datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc)

    def test_framesReachTheRegistry(self):
        """
        Frames fed whole, then byte by byte, reach the sinks as one stream
        named after the peer, with consecutive seqs, the JPEG decoded and
        the timestamp as capture time, and no metadata; statistics count
        them.
        """
        proto, transport = self.h.connect()
        data = base64Frame(self.jpeg, self.when)
        proto.dataReceived(data)
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
        self.assertEqual([f.seq for f in self.h.frames], [0, 1])
        self.assertEqual({f.stream for f in self.h.frames}, {"b64-127.0.0.1-40000"})
        self.assertEqual(self.h.frames[0].jpeg, self.jpeg)
        self.assertAlmostEqual(self.h.frames[0].captureTime, self.when.timestamp(), 5)
        self.assertEqual({f.metadata for f in self.h.frames}, {None})
        self.assertEqual(self.h.registry.stats("b64-127.0.0.1-40000").frames, 2)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)

    def assertDropped(self, data, fragment):
        proto, transport = self.h.connect()
        with capturedLogs() as events:
            proto.dataReceived(data)
        self.assertTrue(transport.disconnecting)
        messages = [e.get("reason", "") for e in events if e.get("peer")]
        self.assertTrue(
            any(fragment in m for m in messages), (messages, fragment)
        )
        self.assertTrue(any("127.0.0.1:40000" == e.get("peer") for e in events))
        self.assertEqual(self.h.frames, [])

    def test_badLengthDrops(self):
        """
        A length field that is not a number drops the peer, logged by name.
        """
        self.assertDropped(b"hello".ljust(64) + b"x" * 100, "not a decimal")

    def test_oversizedLengthDrops(self):
        """
        A length beyond what the largest allowed JPEG encodes to drops the
        peer.
        """
        self.assertDropped(b"999999999".ljust(64), "outside")

    def test_badBase64Drops(self):
        """
        A payload that is not base64 drops the peer.
        """
        payload = b"!!!!" * 10
        data = str(len(payload)).encode().ljust(64) + payload + b"2024-01-01 00:00:00.0".ljust(64)
        self.assertDropped(data, "not base64")

    def test_notJpegDrops(self):
        """
        Base64 of something other than a JPEG drops the peer.
        """
        self.assertDropped(base64Frame(b"GIF89a" * 10, self.when), "not a JPEG")

    def test_badTimestampDrops(self):
        """
        A timestamp field that does not parse drops the peer.
        """
        data = base64Frame(self.jpeg, self.when)[:-64] + b"noon".ljust(64)
        self.assertDropped(data, "timestamp")

    def test_onlyThatPeerDropped(self):
        """
        A bad peer is dropped while another keeps streaming.
        """
        good, goodTransport = self.h.connect(1)
        bad, badTransport = self.h.connect(2)
        bad.dataReceived(b"x" * 64)
        good.dataReceived(base64Frame(self.jpeg, self.when))
        self.assertTrue(badTransport.disconnecting)
        self.assertFalse(goodTransport.disconnecting)
        self.assertEqual(len(self.h.frames), 1)

    def test_disconnectDetaches(self):
        """
        Losing the connection detaches the stream.
        """
        proto, transport = self.h.connect()
        proto.dataReceived(base64Frame(self.jpeg, self.when))
        proto.connectionLost(None)
        self.assertEqual(self.h.registry.liveCount(), 0)

    def test_framesGoToTheDetectorAsLive(self):
        """
        With a detector, every accepted frame is submitted as a live frame.
        """
        submitted = []

        class Inference:
            def submit(self, stream, frame, **kw):
                submitted.append((stream, frame.seq, kw["live"]))
                return Deferred()

        self.h.pipeline.addConsumer(InferenceConsumer(Inference()))
        proto, _ = self.h.connect()
        proto.dataReceived(base64Frame(self.jpeg, self.when) * 2)
        self.assertEqual(
            submitted, [("b64-127.0.0.1-40000", 0, True), ("b64-127.0.0.1-40000", 1, True)]
        )


class LE32Tests(SynchronousTestCase):
    """
    L{LengthPrefixedImageProtocol} over StringTransport.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        self.jpeg = readJpeg()

    def test_noDetectorEchoesTheFrame(self):
        """
        Without a detector the answer is the frame itself, in the same
        framing, and the server closes; the frame reached the sinks.
        """
        h = Harness(LengthPrefixedImageProtocol)
        proto, transport = h.connect()
        proto.dataReceived(le32(self.jpeg))
        self.assertEqual(transport.value(), le32(self.jpeg))
        self.assertTrue(transport.disconnecting)
        self.assertEqual([f.stream for f in h.frames], ["le32-127.0.0.1"])

    def test_annotatedAnswer(self):
        """
        With a detector, the answer is the RESULT's marked-up JPEG.
        """
        threads = []

        def run(f, *args):
            d = Deferred()
            threads.append((args, d))
            return d

        engine = InferenceEngine(lambda *a: None, run, reply="detections")
        h = Harness(LengthPrefixedImageProtocol, inference=InferenceConsumer(engine))
        proto, transport = h.connect()
        proto.dataReceived(le32(self.jpeg))
        self.assertEqual(transport.value(), b"")
        (args, d), = threads
        self.assertTrue(args[2], "le32 always asks for the annotated frame")
        d.callback(Processed([], 5, b"\xff\xd8\xffMARKED\xff\xd9"))
        self.assertEqual(transport.value(), le32(b"\xff\xd8\xffMARKED\xff\xd9"))
        self.assertTrue(transport.disconnecting)

    def test_pngConverted(self):
        """
        A PNG is accepted and turned into a JPEG for the sinks.
        """
        h = Harness(LengthPrefixedImageProtocol)
        proto, transport = h.connect()
        ok, png = cv2.imencode(".png", numpy.zeros((8, 8, 3), numpy.uint8))
        proto.dataReceived(le32(png.tobytes()))
        self.assertTrue(wire.isJpeg(h.frames[0].jpeg))

    def test_unreadableImageDrops(self):
        """
        Bytes that are no image drop the peer with a logged reason and no
        answer.
        """
        h = Harness(LengthPrefixedImageProtocol)
        proto, transport = h.connect()
        with capturedLogs() as events:
            proto.dataReceived(le32(b"garbage" * 5))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(any("unreadable" in e.get("reason", "") for e in events))

    def test_oversizedDrops(self):
        """
        A length over the limit drops the peer before reading the image.
        """
        h = Harness(LengthPrefixedImageProtocol, maxMessageBytes=100)
        proto, transport = h.connect()
        proto.dataReceived(struct.pack("<I", 101))
        self.assertTrue(transport.disconnecting)

    def test_trailingBytesDrop(self):
        """
        More than one image on a connection drops the peer.
        """
        h = Harness(LengthPrefixedImageProtocol)
        proto, transport = h.connect()
        proto.dataReceived(le32(self.jpeg) + b"more")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_sequenceCarriesAcrossConnections(self):
        """
        Two connections from one host are two frames of one stream, not a
        resent duplicate.
        """
        h = Harness(LengthPrefixedImageProtocol)
        for port in (1, 2):
            proto, transport = h.connect(port)
            proto.dataReceived(le32(self.jpeg))
            proto.connectionLost(None)
        self.assertEqual([f.seq for f in h.frames], [0, 1])


class RealSocketTests(TestCase):
    """
    Hand-written blocking-socket clients against the protocols listening on
    a real loopback port.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        self.frames = []
        self.registry, self.pipeline = receiverStack(
            reactor, [CallbackSink(self.frames.append)]
        )

    def listen(self, protocol):
        factory = CompatFactory(protocol, self.registry, self.pipeline, reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def test_le32Client(self):
        """
        A plain socket client sends a JPEG and reads back the same framing.
        """
        port = self.listen(LengthPrefixedImageProtocol)
        jpeg = readJpeg()

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(le32(jpeg))
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return data
                    data += chunk

        answer = yield deferToThread(client)
        (size,) = struct.unpack("<I", answer[:4])
        self.assertEqual(answer[4:], jpeg)
        self.assertEqual(size, len(jpeg))

    @inlineCallbacks
    def test_base64Client(self):
        """
        A plain socket client streams three frames; all three arrive.
        """
        port = self.listen(Base64StreamProtocol)
        jpeg = readJpeg("chelsea.jpg")
        done = threading.Event()

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                for _ in range(3):
                    s.sendall(base64Frame(jpeg, datetime.now(timezone.utc)))
                done.wait(10)

        d = deferToThread(client)
        for _ in range(200):
            if len(self.frames) == 3:
                break
            yield deferLater(0.02)
        done.set()
        yield d
        self.assertEqual([f.seq for f in self.frames], [0, 1, 2])


def deferLater(seconds):
    return task.deferLater(reactor, seconds, lambda: None)
