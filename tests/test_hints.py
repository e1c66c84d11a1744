# -*- test-case-name: tests.test_hints -*-
"""
Tests for L{imageproto.protocol.hints}: a sender pointed at the wrong port,
or with TLS on one side only, says the likely cause once; a TLS receiver
logs a failed handshake with the peer.  The pure logic against
C{StringTransport}, then real C{twistd} processes on loopback.
"""

from __future__ import annotations

import os
import struct

from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto import wire
from imageproto.protocol import hints
from imageproto.protocol.factories import SenderFactory
from tests.test_protocol import framed, receiver
from tests.test_protocol import StubSender

HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
# The first bytes of a TLS ClientHello and of a TLS alert.
CLIENT_HELLO = bytes.fromhex("160301020001000200") + b"\x03\x03" + b"r" * 40
TLS_ALERT = bytes.fromhex("15030300020250")


def _tlsFailure(words: str = "wrong version number") -> Failure:
    return Failure(SSL.Error([("SSL routines", "", words)]))


class PureTests(SynchronousTestCase):
    """
    The functions that turn a symptom into a sentence.
    """

    def test_excerpt(self) -> None:
        """
        Text stays text; other bytes are escaped; long data is cut.
        """
        self.assertEqual(hints.excerpt(b"HTTP/1.1 400 Bad Request\r\n", 16), "HTTP/1.1 400 Bad...")
        self.assertEqual(hints.excerpt(b"\x16\x03\x01"), "\\x16\\x03\\x01")

    def test_looksLikeTLS(self) -> None:
        """
        A TLS handshake or alert record starts 0x16/0x15 then 0x03.
        """
        self.assertTrue(hints.looksLikeTLS(CLIENT_HELLO))
        self.assertTrue(hints.looksLikeTLS(TLS_ALERT))
        self.assertFalse(hints.looksLikeTLS(HTTP_400))
        self.assertFalse(hints.looksLikeTLS(b"\x16"))

    def test_tlsError(self) -> None:
        """
        An OpenSSL error reason gives its words; any other reason C{None}.
        """
        self.assertEqual(hints.tlsError(_tlsFailure()), "wrong version number")
        self.assertIsNone(hints.tlsError(Failure(ConnectionDone())))

    def test_tlsHandshakeFailedNamesTheCause(self) -> None:
        """
        "wrong version number" means a plain port; a certificate error means
        the certificates.
        """
        plain = hints.tlsHandshakeFailed("h:1", "wrong version number")
        self.assertIn("likely listens without TLS", plain)
        cert = hints.tlsHandshakeFailed("h:1", "certificate verify failed")
        self.assertIn("--ca-cert signed the receiver's certificate", cert)

    def test_notImageprotoTLSRecord(self) -> None:
        """
        A TLS record back from a plain sender's HELLO names TLS.
        """
        self.assertIn("--ca-cert", hints.notImageproto("h:1", TLS_ALERT))


def _sender(factory: SenderFactory | None = None, transport=None):
    if factory is None:
        factory = SenderFactory(StubSender(), clock=Clock())
    proto = factory.buildProtocol(None)
    proto.makeConnection(transport or StringTransport())
    return proto, factory


def _hints(events) -> list[str]:
    return [
        formatEvent(e)
        for e in events
        if e.get("log_namespace", "").endswith("SenderFactory") and "hint" in e
    ]


class SenderHintTests(SynchronousTestCase):
    """
    Before anything imageproto-like came back, the sender's symptoms are
    explained once per cause, however often it retries.
    """

    def test_notAMessageOnce(self) -> None:
        """
        First bytes that are not a message (an HTTP 400) are quoted, and the
        cause named, on the first connection only.
        """
        factory = SenderFactory(StubSender(), clock=Clock())
        with capturedLogs() as events:
            for _ in range(3):
                proto, _ = _sender(factory)
                proto.dataReceived(HTTP_400)
                proto.connectionLost(Failure(ConnectionDone()))
        [hint] = _hints(events)
        self.assertIn("answered 'HTTP/1.1 400 Bad Request", hint)
        self.assertIn("not an imageproto port", hint)
        self.assertEqual(
            [e["log_level"] for e in events if "hint" in e], [LogLevel.warn]
        )

    def test_closedBeforeAnswerOnce(self) -> None:
        """
        A plain sender whose connection closes before any message (a TLS
        port, a --compat port) suggests --ca-cert, once.
        """
        factory = SenderFactory(StubSender(), clock=Clock())
        with capturedLogs() as events:
            for _ in range(3):
                proto, _ = _sender(factory)
                proto.connectionLost(Failure(ConnectionDone()))
        [hint] = _hints(events)
        self.assertIn("closed the connection without answering HELLO", hint)
        self.assertIn("--ca-cert", hint)

    def test_noAnswerOnce(self) -> None:
        """
        No answer by the handshake deadline (a --web port) says so, once.
        """
        clock = Clock()
        factory = SenderFactory(StubSender(), clock=clock)
        factory.handshakeTimeout = 2.0
        with capturedLogs() as events:
            for _ in range(2):
                proto, _ = _sender(factory)
                clock.advance(2.5)
                proto.connectionLost(Failure(ConnectionDone()))
        [hint] = _hints(events)
        self.assertIn("nothing came back from", hint)
        self.assertIn("within 2.0 s", hint)

    def test_tlsFailureOnce(self) -> None:
        """
        A TLS error before WELCOME names TLS on one side only.
        """
        factory = SenderFactory(StubSender(), clock=Clock())
        with capturedLogs() as events:
            for _ in range(2):
                proto, _ = _sender(factory)
                proto.connectionLost(_tlsFailure())
        [hint] = _hints(events)
        self.assertIn("TLS handshake with", hint)
        self.assertIn("wrong version number", hint)

    def test_notAfterWelcome(self) -> None:
        """
        Once the receiver has spoken imageproto (WELCOME, a refusal, a
        CHALLENGE), losing the connection explains nothing.
        """
        befores = [
            framed(wire.Welcome()),
            framed(wire.Error(wire.ERR_BUSY, "busy")),
            framed(wire.Challenge(b"s" * 32)),
        ]
        for before in befores:
            factory = SenderFactory(StubSender(), clock=Clock())
            factory.token = b"t" * 32
            with capturedLogs() as events:
                proto, _ = _sender(factory)
                proto.dataReceived(before)
                proto.connectionLost(_tlsFailure())
            self.assertEqual(_hints(events), [], before)


class ReceiverTLSLogTests(SynchronousTestCase):
    """
    The receiver names a failed TLS handshake, and a TLS sender on a plain
    port, at warning level with the peer's address.
    """

    def test_failedHandshakeWarns(self) -> None:
        """
        A connection lost to an OpenSSL error before WELCOME logs a warning
        with the peer and the error.
        """
        proto, transport, _ = receiver()
        with capturedLogs() as events:
            proto.connectionLost(_tlsFailure("http request"))
        [event] = [e for e in events if e["log_level"] == LogLevel.warn]
        text = formatEvent(event)
        self.assertIn("TLS handshake with 192.168.1.1:54321 failed: http request", text)

    def test_cleanLossStaysDebug(self) -> None:
        """
        A connection that simply closes is not a TLS failure.
        """
        proto, transport, _ = receiver()
        with capturedLogs() as events:
            proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])

    def test_clientHelloOnPlainPort(self) -> None:
        """
        A TLS ClientHello on a plain port is named as such.
        """
        proto, transport, _ = receiver()
        with capturedLogs() as events:
            proto.dataReceived(CLIENT_HELLO)
        [event] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("a TLS handshake, but this port is plain TCP", formatEvent(event))
        self.assertTrue(transport.disconnecting)


class _Http400(protocol.Protocol):
    """
    Answers whatever arrives as an HTTP server does to a request it cannot
    read.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(HTTP_400)
        self.transport.loseConnection()


class RealProcessTests(TestCase):
    """
    Real C{twistd imageproto-sender} processes pointed at the wrong port or
    with TLS on one side only: each names the likely cause once while it
    retries, and a TLS receiver warns of the failed handshake.
    """

    timeout = 90

    def setUp(self) -> None:
        from bench import faults
        from tests.test_tls import makeCertificates, x509

        if x509 is None:
            raise self.skipTest("cryptography is not installed")
        self.faults = faults
        self.workdir = os.path.abspath(self.mktemp())
        self.paths = makeCertificates(self.workdir)

    def start(self, args: list[str]):
        process = self.faults.Process(args[0], args)
        self.addCleanup(lambda: process.signal("KILL") or process.ended)
        return process

    @defer.inlineCallbacks
    def receiver(self, port: int, listen: str, *extra: str):
        receiver = self.start(["imageproto", "--port", listen, *extra])
        yield self.faults.waitFor(
            lambda: self.faults.listening(port) or not receiver.running, 30, "receiver"
        )
        return receiver

    @defer.inlineCallbacks
    def senderAt(self, port: int, expected: str, *extra: str):
        """
        Start a sender at C{port}; wait until C{expected} is in its log and
        it has retried twice more; return its output.
        """
        sender = self.start(
            ["imageproto-sender", "--connect", f"tcp:localhost:{port}", "--name",
             "cam", "--max-delay", "0.2", "--handshake-timeout", "1", *extra]
        )
        retries = lambda: sender.text.count("; retry ")  # noqa: E731
        yield self.faults.waitFor(lambda: expected in sender.text, 30, expected)
        after = retries()
        yield self.faults.waitFor(lambda: retries() >= after + 2, 30, "two more retries")
        sender.signal("KILL")
        yield sender.ended
        self.assertEqual(sender.text.count(expected), 1, sender.text[-3000:])
        return sender.text

    @defer.inlineCallbacks
    def test_plainSenderAtTLSPort(self) -> None:
        """
        A plaintext sender at a TLS receiver is told to use --ca-cert; the
        receiver warns that the TLS handshake with it failed.
        """
        from tests.test_tls import sslPort

        port = self.faults.freePort()
        receiver = yield self.receiver(port, sslPort(self.paths, port))
        text = yield self.senderAt(port, "closed the connection without answering HELLO")
        self.assertIn("connect with --ca-cert", text)
        self.assertRegex(
            receiver.text, r"#warn\] TLS handshake with 127\.0\.0\.1:\d+ failed: "
        )

    @defer.inlineCallbacks
    def test_tlsSenderAtPlainPort(self) -> None:
        """
        A TLS sender at a plain receiver is told the receiver likely listens
        without TLS; the receiver names the ClientHello it got.
        """
        port = self.faults.freePort()
        receiver = yield self.receiver(port, f"tcp:{port}:interface=127.0.0.1")
        text = yield self.senderAt(
            port, "likely listens without TLS", "--ca-cert", self.paths["ca"]
        )
        self.assertIn("wrong version number", text)
        self.assertIn("a TLS handshake, but this port is plain TCP", receiver.text)

    @defer.inlineCallbacks
    def test_senderAtWebAndCompatPorts(self) -> None:
        """
        A sender at the --web port hears nothing back, and one at a
        --compat-le32 port is closed on: each says it is likely not an
        imageproto port.
        """
        port, web, compat = (self.faults.freePort() for _ in range(3))
        yield self.receiver(
            port, f"tcp:{port}:interface=127.0.0.1",
            "--web", f"tcp:{web}:interface=127.0.0.1",
            "--compat-le32", f"tcp:{compat}:interface=127.0.0.1",
        )
        text = yield self.senderAt(web, "nothing came back from")
        self.assertIn("likely not an imageproto port", text)
        text = yield self.senderAt(compat, "closed the connection without answering HELLO")
        self.assertIn("likely not an imageproto port", text)

    @defer.inlineCallbacks
    def test_senderAtHttpServer(self) -> None:
        """
        A sender at a server that answers with HTTP quotes the answer.
        """
        factory = protocol.ServerFactory.forProtocol(_Http400)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        text = yield self.senderAt(listening.getHost().port, "answered 'HTTP/1.1 400 Bad Request")
        self.assertIn("not an imageproto port", text)
