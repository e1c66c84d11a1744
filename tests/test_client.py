"""
Tests for L{imageproto.client}: the blocking API against a real receiver
(L{imageproto.receiver.service.ReceiverService} with a detector) listening on a
loopback port in this process.  Client calls run in threads, as in a user's
script, while the reactor serves.
"""

from __future__ import annotations

import os
import socket
import threading

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import Int32StringReceiver
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

import imageproto
from imageproto import client, wire
from imageproto.features.inference.detectors import loadDetector
from imageproto.features.inference.engine import InferenceConfig, attachInference
from imageproto.receiver.service import ReceiverService

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None

DATA = os.path.join(os.path.dirname(__file__), "data")


def readJpeg(name="astronaut.jpg") -> bytes:
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


class EncodeTests(SynchronousTestCase):
    """
    L{client.encodeFrame}.
    """

    def test_jpegPassesThrough(self):
        """
        JPEG bytes are sent as they are.
        """
        jpeg = readJpeg()
        self.assertIs(client.encodeFrame(jpeg), jpeg)

    def test_notJpegRefused(self):
        """
        Bytes that are not a JPEG raise ValueError; other objects TypeError.
        """
        self.assertRaises(ValueError, client.encodeFrame, b"GIF89a")
        self.assertRaises(TypeError, client.encodeFrame, 42)

    def test_numpyEncoded(self):
        """
        A numpy image is JPEG-encoded.
        """
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        self.assertTrue(wire.isJpeg(client.encodeFrame(numpy.zeros((8, 8, 3), numpy.uint8))))


class _SkippingServer(Int32StringReceiver):
    """
    Answers like a receiver whose detector skipped a stale live frame: once
    two frames are in, it acknowledges both and sends a RESULT for the newer
    one only (PROTOCOL.md, "Results").
    """

    MAX_LENGTH = 2**24

    def connectionMade(self):
        self.frames = []

    def send(self, message):
        self.sendString(wire.encodeMessage(message))

    def stringReceived(self, data):
        message = wire.decodeMessage(data)
        if isinstance(message, wire.Hello):
            self.send(wire.Welcome(wire.SCAP_DETECT))
        elif isinstance(message, wire.Frame):
            self.frames.append(message.seq)
            if len(self.frames) == 2:
                for seq in self.frames:
                    self.send(wire.Ack(seq))
                box = {"label": "x", "confidence": 1.0, "box": [0, 0, 1, 1]}
                self.send(wire.Result(max(self.frames), [box], 5))


class SkippedFrameTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_liveSkippedFrameAnsweredByItsAck(self):
        """
        On a live connection, frames in flight together whose older one the
        server skips: the newer gets its RESULT, and the older, acknowledged
        but never to be answered, returns its acknowledgement (C{detected}
        false) instead of waiting out the timeout.
        """
        port = reactor.listenTCP(
            0, ServerFactory.forProtocol(_SkippingServer), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        jpeg = readJpeg()
        s = yield deferToThread(
            imageproto.connect,
            f"127.0.0.1:{port.getHost().port}",
            name="cam",
            live=True,
            timeout=20,
        )
        self.addCleanup(deferToThread, s.close)
        replies = yield gatherResults(
            [deferToThread(s.send, jpeg), deferToThread(s.send, jpeg)]
        )
        older, newer = sorted(replies, key=lambda reply: reply.seq)
        self.assertEqual((older.seq, newer.seq), (0, 1))
        self.assertFalse(older.detected)
        self.assertTrue(newer.detected)
        self.assertEqual(newer.detections[0]["label"], "x")


class LiveServerTests(TestCase):
    """
    The client against a receiver on a real loopback port.
    """

    timeout = 60

    @inlineCallbacks
    def startReceiver(self, detect=None, reply=None, maxStreams=64):
        receiver = ReceiverService(
            "tcp:0:interface=127.0.0.1", reactor=reactor, statsInterval=0,
            maxStreams=maxStreams,
        )
        if detect is not None:
            attachInference(
                receiver, InferenceConfig(loadDetector(detect), reply=reply or "detections")
            )
        receiver.startService()
        self.addCleanup(receiver.stopService)
        port = yield receiver.whenListening()
        self.receiver = receiver
        return f"127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def test_sendReturnsDetections(self):
        """
        C{send} on a detecting server returns that frame's RESULT: the
        astronaut's face, tied to the frame's seq.
        """
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        address = yield self.startReceiver("faces")

        def script():
            with imageproto.connect(address, name="script") as s:
                return s.detects, s.send(readJpeg()), s.send(readJpeg("chelsea.jpg"))

        detects, first, second = yield deferToThread(script)
        self.assertTrue(detects)
        self.assertEqual((first.seq, second.seq), (0, 1))
        self.assertTrue(first.detected)
        self.assertEqual([d["label"] for d in first.detections], ["face"])
        self.assertEqual(second.detections, [])
        self.assertGreater(first.roundTrip, 0)

    @inlineCallbacks
    def test_sendNumpyAnnotated(self):
        """
        A numpy image is encoded and, with C{--reply annotated}, the reply
        carries the marked-up frame, decodable to the same size.
        """
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        address = yield self.startReceiver("faces", reply="annotated")
        image = cv2.imread(os.path.join(DATA, "astronaut.jpg"))

        def script():
            with imageproto.connect(address, name="numpy") as s:
                return s.send(image)

        reply = yield deferToThread(script)
        self.assertEqual(reply.image().shape, image.shape)
        self.assertEqual(len(reply.detections), 1)

    @inlineCallbacks
    def test_sendWithoutDetectorAcknowledges(self):
        """
        A server without a detector answers with the ACK: a reply with no
        detections, not marked as detected.
        """
        address = yield self.startReceiver()

        def script():
            with imageproto.connect(address, name="plain") as s:
                return s.detects, s.send(readJpeg())

        detects, reply = yield deferToThread(script)
        self.assertFalse(detects)
        self.assertEqual((reply.seq, reply.detected, reply.detections), (0, False, []))

    @inlineCallbacks
    def test_badNameRefused(self):
        """
        A stream name the server refuses raises ServerRefused from
        C{connect}, with the server's code.
        """
        address = yield self.startReceiver()

        def script():
            try:
                imageproto.connect(address, name="bad name!")
            except client.ServerRefused as e:
                return e.code

        code = yield deferToThread(script)
        self.assertEqual(code, wire.ERR_BAD_NAME)

    @inlineCallbacks
    def test_reconnectsAfterConnectionLoss(self):
        """
        When the connection drops between frames, the next C{send}
        reconnects and is answered.
        """
        address = yield self.startReceiver("echo")

        def script():
            with imageproto.connect(address, name="flaky") as s:
                s.send(readJpeg())
                s._connection.sock.shutdown(socket.SHUT_RDWR)
                return s.send(readJpeg())

        reply = yield deferToThread(script)
        self.assertEqual(reply.seq, 1)
        self.assertTrue(reply.detected)

    @inlineCallbacks
    def test_timeoutWhenNobodyListens(self):
        """
        Connecting to a port nobody listens on raises TimeoutError after
        the timeout.
        """
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()

        def script():
            try:
                imageproto.connect(f"127.0.0.1:{port}", name="x", timeout=0.3)
            except TimeoutError as e:
                return str(e)

        message = yield deferToThread(script)
        self.assertIn("cannot connect", message)

    @inlineCallbacks
    def test_sendLatestKeepsNewest(self):
        """
        C{sendLatest} returns at once; offered faster than answered, older
        frames are dropped and the newest offered frame is the one answered
        last; C{latest()} returns that reply, already when C{onReply} runs.
        Every offer is either sent (one seq each) or counted as dropped.
        """
        address = yield self.startReceiver("echo", reply="annotated")
        older, newest = readJpeg("astronaut.jpg"), readJpeg("chelsea.jpg")
        offers = 51
        newestAnswered = threading.Event()
        replies = []

        def script():
            with imageproto.connect(address, name="loop", live=True) as s:

                def onReply(reply):
                    replies.append((reply, s.latest()))
                    # The echo detector sends the frame back as it came.
                    if reply.jpeg == newest:
                        newestAnswered.set()

                s.onReply = onReply
                for _ in range(offers - 1):
                    s.sendLatest(older)
                s.sendLatest(newest)
                # Bounded: a lost answer fails this test, never hangs it.
                answered = newestAnswered.wait(10)
                return answered, s.dropped, s.latest()

        answered, dropped, latest = yield deferToThread(script)
        self.assertTrue(
            answered,
            f"the newest offered frame was not answered in 10 s; replies: "
            f"{[r.seq for r, _ in replies]}, dropped {dropped}",
        )
        self.assertGreater(dropped, 0)
        sent = offers - dropped
        self.assertEqual([r.seq for r, _ in replies], list(range(sent)))
        self.assertEqual([r.seq for r, seen in replies if seen is not r], [])
        self.assertIs(latest, replies[-1][0])
        self.assertEqual(latest.jpeg, newest)
        self.assertTrue(latest.detected)
