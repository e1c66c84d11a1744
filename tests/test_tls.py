# -*- test-case-name: tests.test_tls -*-
"""
Tests for L{imageproto.protocol.tls}: certificates made at run time with
C{cryptography}, real TLS handshakes on loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
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

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = None


def _name(cn: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key, issuerName, issuerKey, ca: bool, hosts=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuerName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        names = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    return builder.sign(issuerKey, hashes.SHA256())


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _writePair(directory: str, stem: str, cert, key) -> tuple[str, str]:
    certPath = _write(directory, stem + ".crt", cert.public_bytes(serialization.Encoding.PEM))
    keyPath = _write(
        directory,
        stem + ".key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return certPath, keyPath


def makeCertificates(directory: str) -> dict[str, str]:
    """
    Write a CA, a server certificate for C{localhost}/C{127.0.0.1}, a client
    certificate (CN C{cam-1}) signed by that CA, and a second, untrusted CA
    with its own client certificate, into C{directory}.

    @return: paths keyed C{ca}, C{serverCert}, C{serverKey}, C{clientCert},
        C{clientKey}, C{rogueCa}, C{rogueCert}, C{rogueKey}.
    """
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for prefix, caName in [("", "imageproto test CA"), ("rogue", "rogue CA")]:
        caKey = ec.generate_private_key(ec.SECP256R1())
        caCert = _issue(caName, caKey, _name(caName), caKey, ca=True)
        caPath, _ = _writePair(directory, prefix + "ca", caCert, caKey)
        clientKey = ec.generate_private_key(ec.SECP256R1())
        client = _issue("cam-1", clientKey, caCert.subject, caKey, ca=False)
        clientPaths = _writePair(directory, prefix + "client", client, clientKey)
        if prefix:
            paths.update(rogueCa=caPath, rogueCert=clientPaths[0], rogueKey=clientPaths[1])
        else:
            paths.update(ca=caPath, clientCert=clientPaths[0], clientKey=clientPaths[1])
            serverKey = ec.generate_private_key(ec.SECP256R1())
            server = _issue(
                "localhost",
                serverKey,
                caCert.subject,
                caKey,
                ca=False,
                hosts=("localhost", "127.0.0.1"),
            )
            paths["serverCert"], paths["serverKey"] = _writePair(
                directory, "server", server, serverKey
            )
    return paths


def sslPort(paths: dict[str, str], port: int = 0) -> str:
    """
    The receiver's C{--port} string for the server certificate in C{paths}.
    """
    return (
        f"ssl:{port}:interface=127.0.0.1:privateKey={paths['serverKey']}"
        f":certKey={paths['serverCert']}"
    )


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
