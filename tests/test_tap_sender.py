"""
Tests for L{imageproto.tap.sender}: option parsing, usage errors, and the
services C{makeService} builds.
"""

import os
import socket

from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.tap.config import CameraSpec, ImagesSpec, PatternSpec, SenderConfig, VideoSpec
from imageproto.tap.sender import Options, exitProcess, makeService


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.video = os.path.join(self.directory, "clip.avi")
        with open(self.video, "wb") as f:
            f.write(b"video")
        self.images = os.path.join(self.directory, "images")
        os.mkdir(self.images)
        with open(os.path.join(self.images, "0001.jpg"), "wb") as f:
            f.write(b"jpeg")

    def test_defaults(self):
        """
        With no options: the test pattern, tcp:localhost:8080, the host
        name, quality 90, the source's default window, max delay 5 s,
        retries forever.
        """
        config = SenderConfig.fromOptions(parse())
        self.assertEqual(
            config,
            SenderConfig(
                connect="tcp:localhost:8080",
                name=socket.gethostname(),
                source=PatternSpec(),
                fps=None,
                quality=90,
                window=None,
                maxDelay=5.0,
                maxRetries=None,
            ),
        )

    def test_everything(self):
        """
        Every option lands in the config, coerced.
        """
        config = SenderConfig.fromOptions(
            parse(
                "--video", self.video, "--loop", "--connect", "tcp:10.0.0.1:9000",
                "--name", "door", "--fps", "12.5", "--width", "320", "--height", "240",
                "--quality", "70", "--count", "100", "--window", "4",
                "--max-delay", "2", "--max-retries", "3",
            )
        )
        self.assertEqual(
            config,
            SenderConfig(
                "tcp:10.0.0.1:9000", "door", VideoSpec(self.video, True),
                12.5, 320, 240, 70, 100, 4, 2.0, 3,
            ),
        )

    def test_hostPortShorthand(self):
        """
        --host and --port make a TCP endpoint description.
        """
        self.assertEqual(parse("--host", "example.com", "--port", "9")["connect"], "tcp:example.com:9")
        self.assertEqual(parse("--port", "9")["connect"], "tcp:localhost:9")

    def test_connectAndHostConflict(self):
        """
        --connect with --host or --port is a usage error.
        """
        self.assertRaises(UsageError, parse, "--connect", "tcp:a:1", "--port", "2")

    def test_connectRepeated(self):
        """
        --connect given several times names the receivers in order: the
        first is C{connect}, the others C{failover}, and C{endpoints} lists
        them all; each is checked.
        """
        config = SenderConfig.fromOptions(
            parse("--connect", "tcp:a:1", "-c", "tcp:b:2", "--connect", "unix:/tmp/c")
        )
        self.assertEqual(config.connect, "tcp:a:1")
        self.assertEqual(config.failover, ("tcp:b:2", "unix:/tmp/c"))
        self.assertEqual(config.endpoints, ("tcp:a:1", "tcp:b:2", "unix:/tmp/c"))
        e = self.assertRaises(UsageError, parse, "--connect", "tcp:a:1", "--connect", "nosuchtype:x")
        self.assertIn("nosuchtype:x", str(e))
        self.assertRaises(UsageError, parse, "--connect", "tcp:a:1", "--connect", "tcp:b:2", "--host", "h")

    def test_badEndpoint(self):
        """
        An endpoint description Twisted cannot parse is a usage error.
        """
        e = self.assertRaises(UsageError, parse, "--connect", "nosuchtype:x")
        self.assertIn("nosuchtype:x", str(e))

    def test_pathsAbsolute(self):
        """
        Relative paths to the video or image folder are stored absolute.
        """
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.directory)
        self.assertEqual(parse("--video", "clip.avi")["video"], self.video)
        self.assertEqual(
            SenderConfig.fromOptions(parse("--images", "images")).source,
            ImagesSpec(self.images),
        )

    def test_twoSources(self):
        """
        Two sources at once is a usage error naming both.
        """
        e = self.assertRaises(UsageError, parse, "--video", self.video, "--camera", "0")
        self.assertIn("--video and --camera", str(e))

    def test_missingVideo(self):
        """
        A video file that does not exist is a usage error.
        """
        self.assertRaises(UsageError, parse, "--video", os.path.join(self.directory, "no.avi"))

    def test_missingOrEmptyFolder(self):
        """
        A missing image folder, or one without images, is a usage error.
        """
        self.assertRaises(UsageError, parse, "--images", os.path.join(self.directory, "no"))
        empty = os.path.join(self.directory, "empty")
        os.mkdir(empty)
        e = self.assertRaises(UsageError, parse, "--images", empty)
        self.assertIn("no image files", str(e))

    def test_camera(self):
        """
        A numeric --camera is a device index; anything else a URL.
        """
        self.assertEqual(SenderConfig.fromOptions(parse("--camera", "2")).source, CameraSpec(2))
        self.assertEqual(
            SenderConfig.fromOptions(parse("--camera", "rtsp://cam/1")).source,
            CameraSpec("rtsp://cam/1"),
        )

    def test_loopNeedsVideo(self):
        """
        --loop without --video is a usage error.
        """
        self.assertRaises(UsageError, parse, "--loop")

    def test_badValues(self):
        """
        Out-of-range or non-numeric values are usage errors.
        """
        for argv in [
            ("--quality", "0"), ("--quality", "101"), ("--fps", "-1"), ("--fps", "fast"),
            ("--window", "0"), ("--width", "-5"), ("--count", "-1"),
            ("--max-delay", "0"), ("--max-retries", "-1"), ("--port", "70000"),
            ("--name", ""), ("--name", "x" * 256),
        ]:
            self.assertRaises(UsageError, parse, *argv)

    def test_patternSize(self):
        """
        With the test pattern, --width and --height set the pattern's size.
        """
        config = SenderConfig.fromOptions(parse("--width", "320", "--height", "200"))
        self.assertEqual(config.source, PatternSpec(320, 200))


class MetadataOptionTests(SynchronousTestCase):
    def test_metadataInConfig(self):
        """
        C{--metadata} takes a JSON object or string, checked and rewritten
        compactly into L{SenderConfig.metadata}; without it there is none.
        """
        self.assertIsNone(SenderConfig.fromOptions(parse()).metadata)
        config = SenderConfig.fromOptions(parse("--metadata", '{"site": "door", "floor": 2}'))
        self.assertEqual(config.metadata, '{"site":"door","floor":2}')
        self.assertEqual(SenderConfig.fromOptions(parse("--metadata", ' "door" ')).metadata, '"door"')

    def test_badMetadata(self):
        """
        Metadata that is not a JSON object or string, or is over the bound,
        is a usage error naming the option, before anything starts.
        """
        for bad in ("door", "[1, 2]", "42", "null", "", '{"a": NaN}', '{"a": 1',
                    '{"a": "' + "x" * 4100 + '"}'):
            with self.assertRaises(UsageError, msg=bad) as caught:
                parse("--metadata", bad)
            self.assertIn("--metadata", str(caught.exception))

    def test_makeServicePassesMetadata(self):
        """
        The sender C{makeService} builds puts the configured metadata on its
        frames.
        """
        service = makeService(parse("--metadata", '{"a": 1}'), MemoryReactorClock())
        self.assertEqual(service.sender.metadata, '{"a":1}')
        self.assertTrue(service.sender.hello().capabilities & wire.CAP_METADATA)


class MakeServiceTests(SynchronousTestCase):
    def test_services(self):
        """
        makeService builds a SenderService holding a connection service and
        a capture service, opening nothing.
        """
        from imageproto.sender.service import CaptureService, SenderConnectionService, SenderService

        reactor = MemoryReactorClock()
        service = makeService(parse("--count", "5", "--max-delay", "2"), reactor)
        self.assertIsInstance(service, SenderService)
        kinds = sorted(type(s).__name__ for s in service)
        self.assertEqual(kinds, ["CaptureService", "SenderConnectionService"])
        connection = [s for s in service if isinstance(s, SenderConnectionService)][0]
        capture = [s for s in service if isinstance(s, CaptureService)][0]
        self.assertEqual(connection.factory.maxDelay, 2.0)
        self.assertEqual(capture.count, 5)
        self.assertTrue(service.sender.live)

    def test_servicesSeveralReceivers(self):
        """
        With --connect repeated, the connection service's connector holds
        one endpoint per receiver, in the order given, and tries the first.
        """
        from imageproto.sender.service import SenderConnectionService

        reactor = MemoryReactorClock()
        service = makeService(
            parse("--connect", "tcp:127.0.0.1:9001", "--connect", "tcp:127.0.0.1:9002"), reactor
        )
        connection = [s for s in service if isinstance(s, SenderConnectionService)][0]
        self.assertEqual(
            connection.connector.destinations, ["tcp:127.0.0.1:9001", "tcp:127.0.0.1:9002"]
        )
        self.assertEqual(len(connection.connector.endpoints), 2)
        self.assertEqual(reactor.tcpClients, [])

    def test_exitProcess(self):
        """
        exitProcess stops the reactor; with status 0 it leaves the exit
        status to twistd (no atexit handler).
        """
        import atexit

        registered = []
        self.patch(atexit, "register", lambda *a: registered.append(a))
        reactor = MemoryReactorClock()
        reactor.running = True
        exitProcess(reactor, 0)
        self.assertEqual(registered, [])
        self.assertTrue(reactor.hasStopped)
        exitProcess(MemoryReactorClock(), 3)
        self.assertEqual(registered[0][1:], (3,))


class ConfigTests(SynchronousTestCase):
    def test_securityConfig(self):
        """
        The token and TLS options become the config's typed security and
        limits, with absolute paths.
        """
        from imageproto.tap.security import SenderLimitsConfig, TlsConfig

        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        token = os.path.join(directory, "token")
        with open(token, "w") as f:
            f.write("imageproto-test-token-0001\n")
        ca = os.path.join(directory, "ca.pem")
        with open(ca, "w") as f:
            f.write("x")
        config = parse(
            "--token-file", token, "--ca-cert", ca, "--handshake-timeout", "3",
            "--heartbeat", "1", "--results", os.path.join(directory, "out"),
        ).config
        self.assertEqual(config.security.token, b"imageproto-test-token-0001")
        self.assertEqual(config.security.tls, TlsConfig(ca))
        self.assertEqual(config.limits, SenderLimitsConfig(3.0, None, 1.0))
        self.assertEqual(config.results, os.path.join(directory, "out"))
