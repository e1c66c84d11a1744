# -*- test-case-name: tests.test_tls -*-
"""
Tests for L{imageproto.protocol.tls}: certificates made at run time with
C{cryptography}, real TLS handshakes on loopback.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto.protocol.tls import (
    TLSConfigError,
    clientCreator,
    parseEndpointString,
    peerCertificateSubject,
    serverEndpoint,
)
from tests.helpers import makeCertificates, sslPort

try:
    from cryptography import x509
except ImportError:  # pragma: no cover
    x509 = None


class ParseTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        Endpoint strings split into type, positional and keyword arguments,
        with backslash-escaped colons kept.
        """
        self.assertEqual(
            parseEndpointString(r"ssl:8443:privateKey=C\:/k.pem:interface=\:\:1"),
            ("ssl", ["8443"], {"privateKey": "C:/k.pem", "interface": "::1"}),
        )

    def test_clientCARequiresTLSPort(self) -> None:
        """
        C{clientCA} with a plain TCP port is a configuration error.
        """
        e = self.assertRaises(
            TLSConfigError, serverEndpoint, reactor, "tcp:8080", "ca.pem"
        )
        self.assertIn("--client-ca needs a TLS port", str(e))

    def test_clientCertWithoutKey(self) -> None:
        """
        A client certificate without its key is refused before connecting.
        """
        self.assertRaises(
            TLSConfigError, clientCreator, "localhost", None, "client.crt", None
        )

    def test_missingFiles(self) -> None:
        """
        Unreadable files raise L{TLSConfigError} naming the file.
        """
        e = self.assertRaises(
            TLSConfigError, clientCreator, "localhost", "/nonexistent/ca.pem"
        )
        self.assertIn("/nonexistent/ca.pem", str(e))


class _Greeter(Protocol):
    """
    Server side: writes its peer's certificate subject (or "-") and waits.
    """

    def connectionMade(self) -> None:
        self.factory.connected.append(self)

    def connectionLost(self, reason) -> None:
        self.factory.connected.remove(self)

    def dataReceived(self, data: bytes) -> None:
        subject = peerCertificateSubject(self.transport)
        self.transport.write((subject or "-").encode() + b"\n")


class _Asker(Protocol):
    """
    Client side: asks once the connection is up; fires C{answer}.
    """

    def __init__(self) -> None:
        self.answer = defer.Deferred()
        self._data = b""

    def connectionMade(self) -> None:
        self.transport.write(b"?")

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if self._data.endswith(b"\n"):
            self.transport.loseConnection()
            self.answer.callback(self._data.strip().decode())

    def connectionLost(self, reason) -> None:
        if not self.answer.called:
            self.answer.errback(reason)


class HandshakeTests(TestCase):
    """
    Real TLS handshakes between L{serverEndpoint} and L{clientCreator}.
    """

    timeout = 20

    def setUp(self) -> None:
        if x509 is None:
            raise self.skipTest("cryptography is not installed")
        self.paths = makeCertificates(self.mktemp())

    @defer.inlineCallbacks
    def listen(self, clientCA=None):
        factory = Factory.forProtocol(_Greeter)
        factory.connected = []
        endpoint = serverEndpoint(reactor, sslPort(self.paths), clientCA)
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(
            lambda: [p.transport.abortConnection() for p in list(factory.connected)]
        )
        return port.getHost().port

    @defer.inlineCallbacks
    def ask(self, port, hostname="localhost", **kwargs):
        creator = clientCreator(hostname, **kwargs)
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        asker = _Asker()
        yield endpoint.connect(Factory.forProtocol(lambda: asker))
        answer = yield asker.answer
        return answer

    @defer.inlineCallbacks
    def test_serverVerified(self) -> None:
        """
        A client trusting the CA completes the handshake with a server
        certificate issued for the host name it dialled.
        """
        port = yield self.listen()
        answer = yield self.ask(port, caCert=self.paths["ca"])
        self.assertEqual(answer, "-")

    @defer.inlineCallbacks
    def test_untrustedServerRefused(self) -> None:
        """
        A client trusting a different CA refuses the server's certificate.
        """
        port = yield self.listen()
        yield self.assertFailure(self.ask(port, caCert=self.paths["rogueCa"]), Exception)

    @defer.inlineCallbacks
    def test_wrongHostnameRefused(self) -> None:
        """
        A certificate for C{localhost} does not satisfy a client that dialled
        another name.
        """
        port = yield self.listen()
        yield self.assertFailure(
            self.ask(port, hostname="camera.example", caCert=self.paths["ca"]),
            Exception,
        )

    @defer.inlineCallbacks
    def test_mutualTLS(self) -> None:
        """
        With C{clientCA}, a client certificate signed by that CA is accepted
        and the server sees its common name.
        """
        port = yield self.listen(clientCA=self.paths["ca"])
        answer = yield self.ask(
            port,
            caCert=self.paths["ca"],
            clientCert=self.paths["clientCert"],
            clientKey=self.paths["clientKey"],
        )
        self.assertEqual(answer, "cam-1")

    @defer.inlineCallbacks
    def test_mutualTLSWithoutCertificate(self) -> None:
        """
        With C{clientCA}, a client presenting no certificate is refused.
        """
        port = yield self.listen(clientCA=self.paths["ca"])
        yield self.assertFailure(self.ask(port, caCert=self.paths["ca"]), Exception)

    @defer.inlineCallbacks
    def test_mutualTLSRogueCertificate(self) -> None:
        """
        With C{clientCA}, a client certificate from another CA is refused.
        """
        port = yield self.listen(clientCA=self.paths["ca"])
        yield self.assertFailure(
            self.ask(
                port,
                caCert=self.paths["ca"],
                clientCert=self.paths["rogueCert"],
                clientKey=self.paths["rogueKey"],
            ),
            Exception,
        )


class RealProcessTests(TestCase):
    """
    C{twistd imageproto} with mutual TLS and tokens, and
    C{twistd imageproto-sender} with a CA, a client certificate and a
    token: real processes on loopback.
    """

    timeout = 120

    def setUp(self) -> None:
        if x509 is None:
            raise self.skipTest("cryptography is not installed")
        from bench import faults

        self.faults = faults
        self.workdir = os.path.abspath(self.mktemp())
        self.paths = makeCertificates(self.workdir)
        self.tokens = os.path.join(self.workdir, "tokens")
        with open(self.tokens, "w") as f:
            f.write("# server tokens\nimageproto-test-token-0001 cam-*\n")

    def token(self, value: str) -> str:
        path = os.path.join(self.workdir, f"token-{value[-4:]}")
        with open(path, "w") as f:
            f.write(value + "\n")
        return path

    @defer.inlineCallbacks
    def receiver(self):
        faults = self.faults
        port = faults.freePort()
        receiver = faults.Process(
            "receiver",
            [
                "imageproto",
                "--port", sslPort(self.paths, port),
                "--client-ca", self.paths["ca"],
                "--token-file", self.tokens,
                "--stats-file", os.path.join(self.workdir, "stats.json"),
            ],
        )
        self.addCleanup(lambda: receiver.signal("KILL") or receiver.ended)
        yield faults.waitFor(
            lambda: faults.listening(port) or not receiver.running, 30, "receiver"
        )
        return port, receiver

    def sender(self, port: int, token: str, *extra: str):
        sender = self.faults.Process(
            "sender",
            [
                "imageproto-sender",
                "--connect", f"tcp:localhost:{port}",
                "--name", "cam-1",
                "--count", "20",
                "--fps", "20",
                "--ca-cert", self.paths["ca"],
                "--token-file", self.token(token),
                *extra,
            ],
        )
        self.addCleanup(lambda: sender.signal("KILL") or sender.ended)
        return sender

    @defer.inlineCallbacks
    def test_mutualTLSWithToken(self) -> None:
        """
        A sender that verifies the receiver, presents a client certificate
        and proves a listed token streams every frame, and exits 0.
        """
        port, receiver = yield self.receiver()
        sender = self.sender(
            port,
            "imageproto-test-token-0001",
            "--client-cert", self.paths["clientCert"],
            "--client-key", self.paths["clientKey"],
        )
        status = yield sender.ended
        self.assertEqual(status, 0, sender.text[-2000:])
        self.assertEqual(sender.summary()["acknowledged"], 20)

    @defer.inlineCallbacks
    def test_wrongTokenExits(self) -> None:
        """
        A wrong token: the sender logs the server's reason and exits
        non-zero after one attempt; the receiver logs the refusal with the
        peer's address.
        """
        port, receiver = yield self.receiver()
        sender = self.sender(
            port,
            "imageproto-wrong-token-9999",
            "--client-cert", self.paths["clientCert"],
            "--client-key", self.paths["clientKey"],
        )
        status = yield sender.ended
        self.assertNotEqual(status, 0)
        self.assertIn("authentication failed: unknown token (code 6)", sender.text)
        self.assertEqual(sender.text.count("streaming 'cam-1'"), 0)
        self.assertRegex(
            receiver.text,
            r"refused 127\.0\.0\.1:\d+ as 'cam-1': authentication failed",
        )

    @defer.inlineCallbacks
    def test_noClientCertificate(self) -> None:
        """
        Without a client certificate the receiver's TLS refuses the sender,
        which keeps retrying with backoff (a TLS failure may be transient)
        until --max-retries, then exits non-zero.
        """
        port, receiver = yield self.receiver()
        sender = self.sender(port, "imageproto-test-token-0001", "--max-retries", "1")
        status = yield sender.ended
        self.assertNotEqual(status, 0)
        self.assertIn("gave up after 1 retries", sender.text)
