# -*- test-case-name: tests.test_security -*-
"""
Tests for L{imageproto.tap.security}: the security and limit options of both
taps, parsed and applied.
"""

from __future__ import annotations

from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from imageproto.tap import security
from imageproto.protocol.factories import ReceiverFactory, SenderFactory
from imageproto.tap import receiver as receiverTap
from imageproto.tap import sender as senderTap

TOKEN = "imageproto-test-token-0001"


class ReceiverOptionTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def parse(self, *args: str) -> receiverTap.Options:
        options = receiverTap.Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        """
        Without options the receiver applies the documented limits and
        requires no token.
        """
        config = self.parse().config
        factory = ReceiverFactory(None, None)
        security.applyToReceiverFactory(factory, config.security, config.limits)
        self.assertEqual(
            (
                factory.tokens,
                factory.maxConnections,
                factory.handshakeTimeout,
                factory.idleTimeout,
                factory.heartbeat,
                factory.maxPeerBuffer,
            ),
            (None, 256, 10.0, 6.0, 2, 64 * 1024 * 1024),
        )

    def test_applied(self) -> None:
        """
        Each option reaches the factory; --idle-timeout 0 turns it off; the
        peer buffer is never smaller than one frame.
        """
        options = self.parse(
            "--token-file", self.write(f"{TOKEN} cam-*\n"),
            "--max-connections", "3",
            "--handshake-timeout", "1.5",
            "--idle-timeout", "0",
            "--heartbeat", "0",
            "--max-peer-buffer", "10",
            "--max-frame-bytes", "2048",
        )
        factory = ReceiverFactory(None, None, maxMessageBytes=2048)
        config = options.config
        security.applyToReceiverFactory(factory, config.security, config.limits)
        self.assertEqual(factory.tokens.grants[0].patterns, ("cam-*",))
        self.assertEqual(
            (factory.maxConnections, factory.handshakeTimeout, factory.idleTimeout),
            (3, 1.5, None),
        )
        self.assertEqual(factory.maxPeerBuffer, 2048)

    def test_badValues(self) -> None:
        """
        Bad numbers, a bad token file, an idle timeout not longer than the
        heartbeat, and --client-ca on a plain TCP port are usage errors.
        """
        cases = [
            (["--max-connections", "0"], "--max-connections 0"),
            (["--idle-timeout", "nan"], "--idle-timeout nan"),
            (["--idle-timeout", "2", "--heartbeat", "2"], "longer than --heartbeat"),
            (["--token-file", self.write("short *\n")], "at least 16 are required"),
            (["--token-file", "/nonexistent"], "no such file"),
            (["--client-ca", self.write("x")], "--client-ca needs a TLS --port"),
        ]
        for args, message in cases:
            e = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(message, str(e))

    def test_mutualTLSEndpoint(self) -> None:
        """
        With --client-ca and an ssl: port, makeService listens on an
        SSL endpoint whose context requires a client certificate.
        """
        from tests.helpers import makeCertificates, sslPort

        try:
            paths = makeCertificates(self.mktemp())
        except ImportError as e:  # pragma: no cover
            raise self.skipTest(f"certificates cannot be made: {e}")
        options = self.parse("--port", sslPort(paths, 8443), "--client-ca", paths["ca"])
        config = options.config
        endpoint = security.receiverEndpoint(config.port, config.security, MemoryReactorClock())
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)
        self.assertEqual(endpoint._port, 8443)


class SenderOptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> senderTap.Options:
        options = senderTap.Options()
        options.parseOptions(list(args))
        return options

    def test_tokenApplied(self) -> None:
        """
        --token-file reads the first token; the liveness options reach the
        factory.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"# mine\n{TOKEN}\n")
        options = self.parse(
            "--token-file", path, "--idle-timeout", "4", "--heartbeat", "1"
        )
        factory = SenderFactory(None)
        config = options.config
        security.applyToSenderFactory(factory, config.security, config.limits)
        self.assertEqual(
            (factory.token, factory.idleTimeout, factory.heartbeat),
            (TOKEN.encode(), 4.0, 1.0),
        )

    def test_tlsOptionErrors(self) -> None:
        """
        A client certificate needs its key and a CA; --ca-cert needs a tcp:
        endpoint to wrap.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        cases = [
            (["--client-cert", path], "go together"),
            (["--client-cert", path, "--client-key", path], "needs --ca-cert"),
            (["--ca-cert", path, "--connect", "unix:/tmp/x.sock"], "wraps a tcp:"),
        ]
        for args, message in cases:
            e = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(message, str(e))
