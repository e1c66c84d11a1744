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
from imageproto.client import connection, transport
from imageproto.features.inference.detectors import loadDetector
from imageproto.features.inference.engine import InferenceConfig, attachInference
from imageproto.protocol.tokens import TokenTable
from imageproto.receiver.service import ReceiverService
from tests.helpers import DATA, readJpeg

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None


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


class HandshakeTests(SynchronousTestCase):
    """
    L{imageproto.client.connection.handshake} answers the server as the
    Twisted sender does (L{wire.answerServer}), over a socket pair whose
    server end is scripted in advance: no reactor, no threads.
    """

    hello = wire.Hello("cam", wire.CAP_RESULTS | wire.CAP_AUTH, 5)

    def handshake(self, serverSays, token=None):
        """
        Run the handshake against C{serverSays}; return its outcome (the
        WELCOME or the exception) and what the client wrote.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.sendall(b"".join(wire.encodeFramed(m) for m in serverSays))
        theirs.shutdown(socket.SHUT_WR)
        try:
            outcome = connection.handshake(ours, self.hello, token)
        except client.ClientError as e:
            outcome = e
        ours.shutdown(socket.SHUT_WR)
        written = []
        while True:
            try:
                written.append(connection.readMessage(theirs))
            except client.ClientError:
                return outcome, written

    def test_welcome(self):
        """
        HELLO goes first; PINGs before WELCOME are answered by PONG; the
        WELCOME is returned.
        """
        welcome = wire.Welcome(wire.SCAP_DETECT)
        outcome, written = self.handshake([wire.Ping(9), welcome])
        self.assertEqual(outcome, welcome)
        self.assertEqual(written, [self.hello, wire.Pong(9)])

    def test_challenge(self):
        """
        A CHALLENGE is answered by an AUTH proving the token for the
        HELLO's name.
        """
        nonce = b"s" * 32
        outcome, written = self.handshake(
            [wire.Challenge(nonce), wire.Welcome()], token=b"secret"
        )
        self.assertEqual(outcome, wire.Welcome())
        hello, auth = written
        self.assertEqual(
            auth.digest, wire.computeDigest(b"secret", nonce, auth.nonce, "cam")
        )

    def test_challengeWithoutToken(self):
        """
        A CHALLENGE to a client without a token is refused on this side:
        ERROR 6 goes to the server and ServerRefused (code 6) to the
        caller, so that C{connect} does not retry.
        """
        outcome, written = self.handshake([wire.Challenge(b"s" * 32)])
        self.assertIsInstance(outcome, client.ServerRefused)
        self.assertEqual(outcome.code, wire.ERR_AUTH)
        self.assertIn("token=", outcome.reason)
        self.assertEqual(written, [self.hello, wire.Error(wire.ERR_AUTH, outcome.reason)])

    def test_refused(self):
        """
        An ERROR before WELCOME raises ServerRefused with its code and
        reason, and nothing is answered.
        """
        outcome, written = self.handshake([wire.Error(wire.ERR_BAD_NAME, "bad")])
        self.assertIsInstance(outcome, client.ServerRefused)
        self.assertEqual((outcome.code, outcome.reason), (wire.ERR_BAD_NAME, "bad"))
        self.assertEqual(written, [self.hello])

    def test_outOfPlace(self):
        """
        An ACK before WELCOME, or a second CHALLENGE, is answered by ERROR 4
        with the reason the Twisted sender gives, and raises ClientError.
        """
        challenge = wire.Challenge(b"s" * 32)
        for serverSays, reason in [
            ([wire.Ack(0)], "unexpected ACK before WELCOME"),
            ([challenge, challenge], "unexpected CHALLENGE after AUTH"),
        ]:
            outcome, written = self.handshake(serverSays, token=b"t")
            self.assertNotIsInstance(outcome, client.ServerRefused)
            self.assertEqual(str(outcome), reason)
            self.assertEqual(written[-1], wire.Error(wire.ERR_PROTOCOL, reason))

    def test_closedDuringHandshake(self):
        """
        A server that closes before WELCOME raises ClientError.
        """
        outcome, written = self.handshake([])
        self.assertIsInstance(outcome, client.ClientError)
        self.assertIn("closed", str(outcome))


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
    def test_tokens(self):
        """
        Against a server that requires tokens, a client with the token
        streams, and one without is refused at once (ServerRefused, code
        6) rather than retrying until its timeout.
        """
        address = yield self.startReceiver()
        token = "client-test-token-000000001"
        self.receiver.factory.tokens = TokenTable.parse(f"{token} *")

        def script():
            with imageproto.connect(address, name="cam", token=token) as s:
                reply = s.send(readJpeg())
            try:
                imageproto.connect(address, name="cam", timeout=30)
            except client.ServerRefused as e:
                return reply, e.code

        reply, code = yield deferToThread(script)
        self.assertEqual(reply.seq, 0)
        self.assertEqual(code, wire.ERR_AUTH)

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


class AddressTests(SynchronousTestCase):
    """
    L{imageproto.client.transport.parseAddress}.
    """

    def test_forms(self):
        """
        "host:port", "tcp:host:port", "ssl:host:port", "tcp://host:port",
        "[v6]:port", a bare host and a tuple all name the host and port;
        "ssl:" asks for TLS.
        """
        parse = transport.parseAddress
        A = transport.Address
        self.assertEqual(parse("localhost:9000"), A("localhost", 9000))
        self.assertEqual(parse("tcp:127.0.0.1:9000"), A("127.0.0.1", 9000))
        self.assertEqual(parse("tcp:host:9000:timeout=5"), A("host", 9000))
        self.assertEqual(parse("ssl:receiver.example:8443"), A("receiver.example", 8443, True))
        self.assertEqual(parse("tcp://10.0.0.1:5555"), A("10.0.0.1", 5555))
        self.assertEqual(parse("[::1]:9000"), A("::1", 9000))
        self.assertEqual(parse("server"), A("server", 8080))
        self.assertEqual(parse(("h", "7")), A("h", 7))

    def test_badPort(self):
        """
        A port that is not a number raises ValueError.
        """
        self.assertRaises(ValueError, transport.parseAddress, "host:http")


class ConnectErrorTests(SynchronousTestCase):
    """
    What C{connect} says when it runs out of time.
    """

    def test_namesTheTellingError(self):
        """
        When the last attempt only timed out (its socket had what was left
        of the time), the error names the one the attempt before it met,
        such as an untrusted certificate.
        """
        import ssl

        from imageproto.client import blocking

        def openTransport(address, timeout, context=None):
            if timeout < 0.1:
                raise TimeoutError("_ssl.c:989: The handshake operation timed out")
            raise ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")

        self.patch(blocking, "openTransport", openTransport)
        with self.assertRaises(TimeoutError) as caught:
            imageproto.connect("localhost:1", name="tls", timeout=0.4)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(caught.exception))

    def test_laterTimeoutsWin(self):
        """
        An error of an early attempt is not named once later attempts, not
        only the last, timed out: a receiver that refused while starting
        and then hangs its handshakes is reported as hanging.
        """
        from imageproto.client import blocking

        errors = [ConnectionRefusedError(111, "Connection refused")]

        def openTransport(address, timeout, context=None):
            raise errors.pop(0) if errors else TimeoutError("timed out")

        self.patch(blocking, "openTransport", openTransport)
        with self.assertRaises(TimeoutError) as caught:
            imageproto.connect("localhost:1", name="x", timeout=0.5)
        self.assertEqual(str(caught.exception), "cannot connect to localhost:1: timed out")

    def test_onlyTimeouts(self):
        """
        Attempts that all time out are reported as that.
        """
        from imageproto.client import blocking

        def openTransport(address, timeout, context=None):
            raise TimeoutError("timed out")

        self.patch(blocking, "openTransport", openTransport)
        with self.assertRaises(TimeoutError) as caught:
            imageproto.connect("localhost:1", name="x", timeout=0.1)
        self.assertEqual(str(caught.exception), "cannot connect to localhost:1: timed out")


class PipelineTests(TestCase):
    """
    C{send(wait=False)}: frames in flight, capture times and metadata,
    against a real receiver on loopback.
    """

    timeout = 60

    @inlineCallbacks
    def startReceiver(self, **kwargs):
        frames = []
        receiver = ReceiverService(
            "tcp:0:interface=127.0.0.1", onFrame=frames.append, reactor=reactor,
            statsInterval=0, **kwargs
        )
        receiver.startService()
        self.addCleanup(receiver.stopService)
        port = yield receiver.whenListening()
        self.frames = frames
        return f"tcp:127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def test_windowOfFramesInFlight(self):
        """
        C{send(wait=False)} returns a L{client.PendingFrame} at once; with a
        window of 4, 40 frames are all answered in order of seq, and never
        more than 4 are unanswered; the endpoint-string address works.
        """
        address = yield self.startReceiver()
        jpeg = readJpeg()
        inFlight = []

        def script():
            with imageproto.connect(address, name="pipe", window=4) as s:
                handles = []
                for i in range(40):
                    handles.append(s.send(jpeg, wait=False, captureTime=1000.0 + i))
                    inFlight.append(len(s._pending))
                return [h.result().seq for h in handles]

        seqs = yield deferToThread(script)
        self.assertEqual(seqs, list(range(40)))
        self.assertLessEqual(max(inFlight), 4)
        self.assertEqual([f.seq for f in self.frames], list(range(40)))
        self.assertEqual([f.captureTime for f in self.frames], [1000.0 + i for i in range(40)])

    @inlineCallbacks
    def test_defaultWindow(self):
        """
        Without a window given, a stream keeps up to 16 frames in flight, a
        live one 8 (as the Twisted sender does).
        """
        address = yield self.startReceiver()

        def script():
            windows = []
            for live in (False, True):
                with imageproto.connect(address, name=f"w{int(live)}", live=live) as s:
                    windows.append(s.window)
            return windows

        windows = yield deferToThread(script)
        self.assertEqual(windows, [16, 8])

    @inlineCallbacks
    def test_resentAfterConnectionLoss(self):
        """
        Frames in flight when the connection drops are sent again on the
        next connection and answered; the receiver keeps each once.
        """
        address = yield self.startReceiver()
        jpeg = readJpeg()

        def script():
            with imageproto.connect(address, name="flaky", window=8) as s:
                handles = [s.sendAsync(jpeg) for _ in range(5)]
                s._connection.sock.shutdown(socket.SHUT_RDWR)
                handles += [s.sendAsync(jpeg) for _ in range(5)]
                return [h.result().seq for h in handles]

        seqs = yield deferToThread(script)
        self.assertEqual(seqs, list(range(10)))
        self.assertEqual(sorted({f.seq for f in self.frames}), list(range(10)))
        self.assertEqual(len(self.frames), 10)

    @inlineCallbacks
    def test_metadata(self):
        """
        Metadata travels with the frame when the receiver takes it, and
        raises L{client.MetadataUnsupported} when it does not (this version
        of the wire module has no C{SCAP_METADATA}, or the server does not
        announce it).
        """
        address = yield self.startReceiver()

        def script():
            with imageproto.connect(address, name="meta") as s:
                try:
                    s.send(readJpeg(), metadata={"msg": "cam|1|2.5"})
                except client.MetadataUnsupported as e:
                    return s.metadata, str(e)
                return s.metadata, None

        supported, error = yield deferToThread(script)
        if getattr(wire, "SCAP_METADATA", None) is None:
            self.assertFalse(supported)
            self.assertIn("metadata", error)
        else:
            self.assertTrue(supported)
            self.assertIsNone(error)
            self.assertEqual(self.frames[0].metadata, {"msg": "cam|1|2.5"})

    @inlineCallbacks
    def test_numpyWithQuality(self):
        """
        A numpy image is encoded at the quality given to C{send}.
        """
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        address = yield self.startReceiver()
        image = cv2.imread(os.path.join(DATA, "astronaut.jpg"))

        def script():
            with imageproto.connect(address, name="q") as s:
                s.send(image, quality=20)
                s.send(image, quality=95)

        yield deferToThread(script)
        low, high = self.frames
        self.assertLess(len(low.jpeg), len(high.jpeg) / 2)


class TlsClientTests(TestCase):
    """
    The blocking client over TLS to a real TLS receiver: the server's
    certificate checked against a CA, and a client certificate presented.
    """

    timeout = 60

    def setUp(self):
        try:
            from tests.test_tls import makeCertificates, sslPort
        except ImportError:  # pragma: no cover
            raise self.skipTest("cryptography is not installed")
        self.paths = makeCertificates(self.mktemp())
        self.sslPort = sslPort

    @inlineCallbacks
    def startReceiver(self, clientCA=None):
        from imageproto.protocol.tls import serverEndpoint

        frames = []
        endpoint = serverEndpoint(reactor, self.sslPort(self.paths), clientCA)
        receiver = ReceiverService(endpoint, onFrame=frames.append, reactor=reactor, statsInterval=0)
        receiver.startService()
        self.addCleanup(receiver.stopService)
        port = yield receiver.whenListening()
        self.frames = frames
        return port.getHost().port

    @inlineCallbacks
    def test_sendOverTls(self):
        """
        C{ssl:localhost:PORT} with C{ca=} verifies the receiver and sends;
        many frames in flight over one TLS connection all arrive.
        """
        port = yield self.startReceiver()
        jpeg = readJpeg()

        def script():
            with imageproto.connect(f"ssl:localhost:{port}", name="tls", ca=self.paths["ca"]) as s:
                handles = [s.sendAsync(jpeg) for _ in range(30)]
                return [h.result().seq for h in handles]

        seqs = yield deferToThread(script)
        self.assertEqual(seqs, list(range(30)))
        self.assertEqual(len(self.frames), 30)

    @inlineCallbacks
    def test_untrustedServerRefused(self):
        """
        A receiver whose certificate the given CA did not sign is not
        trusted: connecting times out with the certificate error.
        """
        port = yield self.startReceiver()

        def script():
            try:
                imageproto.connect(
                    f"ssl:localhost:{port}", name="tls", ca=self.paths["rogueCa"], timeout=0.5
                )
            except TimeoutError as e:
                return str(e)

        message = yield deferToThread(script)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", message)

    @inlineCallbacks
    def test_mutualTls(self):
        """
        A receiver requiring client certificates accepts the client that
        presents one signed by its CA.
        """
        port = yield self.startReceiver(clientCA=self.paths["ca"])

        def script():
            with imageproto.connect(
                f"localhost:{port}", name="cam-1", ca=self.paths["ca"],
                cert=self.paths["clientCert"], key=self.paths["clientKey"],
            ) as s:
                return s.send(readJpeg()).seq

        seq = yield deferToThread(script)
        self.assertEqual(seq, 0)
        self.assertEqual(self.frames[0].stream, "cam-1")
