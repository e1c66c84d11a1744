"""
Tests for L{imageproto.tap.receiver}: C{twistd imageproto}'s options and
service.
"""

import os

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from imageproto.tap.config import ReceiverConfig
from imageproto.receiver.service import ReceiverService, StatsReporter, ThreadPoolService
from imageproto.receiver.consumers import LatestFrameHub
from imageproto.receiver.savedir import SaveDirSink
from imageproto.tap.receiver import Options, makeService


def parse(*args):
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self):
        """
        Without arguments: port 8080 on every interface, 16 MiB frames,
        stats every 5 s, 64 streams, nothing saved or shown.
        """
        options = parse()
        self.assertEqual(
            {k: options[k] for k in ("port", "max-frame-bytes", "save-dir",
                                     "stats-interval", "stats-file",
                                     "max-streams", "display")},
            {
                "port": "tcp:8080",
                "max-frame-bytes": 16 * 1024 * 1024,
                "save-dir": None,
                "stats-interval": 5.0,
                "stats-file": None,
                "max-streams": 64,
                "display": 0,
            },
        )

    def test_portNumber(self):
        """
        A bare port number means TCP on every interface.
        """
        self.assertEqual(parse("--port", "9000")["port"], "tcp:9000")
        self.assertEqual(parse("-p", "0")["port"], "tcp:0")

    def test_portEndpoint(self):
        """
        An endpoint description is kept as given.
        """
        self.assertEqual(
            parse("--port", "tcp:8080:interface=127.0.0.1")["port"],
            "tcp:8080:interface=127.0.0.1",
        )
        self.assertEqual(parse("--port", "unix:/tmp/x.sock")["port"], "unix:/tmp/x.sock")

    def test_badPort(self):
        """
        A port that is neither a number up to 65535 nor an endpoint
        description is a usage error naming the option.
        """
        for bad in ("70000", "nonsense:1", "tcp:notaport", "-3"):
            e = self.assertRaises(UsageError, parse, "--port", bad)
            self.assertIn("--port", str(e))

    def test_numbers(self):
        """
        Numeric options are parsed and checked.
        """
        options = parse("--max-frame-bytes", "100000", "--stats-interval", "0.5",
                        "--max-streams", "3")
        self.assertEqual(
            (options["max-frame-bytes"], options["stats-interval"], options["max-streams"]),
            (100000, 0.5, 3),
        )

    def test_badNumbers(self):
        """
        Non-numbers, non-positive values and frame limits out of range are
        usage errors that say what is wrong.
        """
        cases = [
            (["--max-frame-bytes", "lots"], "--max-frame-bytes lots"),
            (["--max-frame-bytes", "10"], "--max-frame-bytes 10"),
            (["--max-frame-bytes", str(1 << 33)], "--max-frame-bytes"),
            (["--stats-interval", "0"], "stats-interval"),
            (["--stats-interval", "nan"], "stats-interval"),
            (["--max-streams", "0"], "max-streams"),
        ]
        for args, text in cases:
            e = self.assertRaises(UsageError, parse, *args)
            self.assertIn(text, str(e))
            self.assertIn("must be", str(e))

    def test_pathsAbsolute(self):
        """
        --save-dir and --stats-file are stored as absolute paths.
        """
        options = parse("--save-dir", "frames", "--stats-file", "stats.json")
        self.assertEqual(options["save-dir"], os.path.abspath("frames"))
        self.assertEqual(options["stats-file"], os.path.abspath("stats.json"))

    def test_saveDirIsFile(self):
        """
        A --save-dir that is an existing file is a usage error.
        """
        path = self.mktemp()
        with open(path, "w"):
            pass
        e = self.assertRaises(UsageError, parse, "--save-dir", path)
        self.assertIn("not a directory", str(e))

    def test_statsFileDirectoryMissing(self):
        """
        A --stats-file in a directory that does not exist is a usage error.
        """
        e = self.assertRaises(
            UsageError, parse, "--stats-file", os.path.join(self.mktemp(), "s.json")
        )
        self.assertIn("does not exist", str(e))

    def test_displayHeadless(self):
        """
        --display with the headless OpenCV wheel (or without a display) is a
        usage error that says a GUI build of OpenCV and a display are needed.
        """
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise self.skipTest("OpenCV is not installed")
        from imageproto.features.display import DisplayUnavailable, checkDisplay

        try:
            checkDisplay()
        except DisplayUnavailable:
            pass
        else:
            raise self.skipTest("this machine can open OpenCV windows")
        e = self.assertRaises(UsageError, parse, "--display")
        self.assertIn("opencv-python", str(e))
        self.assertIn("display", str(e))


class MakeServiceTests(SynchronousTestCase):
    def test_config(self):
        """
        L{ReceiverConfig.fromOptions} carries every option.
        """
        options = parse("--port", "tcp:0:interface=127.0.0.1", "--max-frame-bytes",
                        "2048", "--save-dir", "/tmp/f", "--stats-interval", "2",
                        "--stats-file", "/tmp/s.json", "--max-streams", "5")
        self.assertEqual(
            ReceiverConfig.fromOptions(options),
            ReceiverConfig(
                port="tcp:0:interface=127.0.0.1",
                maxFrameBytes=2048,
                saveDir="/tmp/f",
                display=False,
                statsInterval=2.0,
                statsFile="/tmp/s.json",
                maxStreams=5,
            ),
        )

    def test_service(self):
        """
        makeService builds a L{ReceiverService} with the options applied,
        opening nothing until started.
        """
        reactor = MemoryReactorClock()
        service = makeService(
            parse("--port", "9123", "--save-dir", "/tmp/f", "--max-streams", "5",
                  "--max-frame-bytes", "4096", "--stats-file", "/tmp/s.json"),
            reactor=reactor,
        )
        self.assertIsInstance(service, ReceiverService)
        kinds = {type(child) for child in service}
        self.assertTrue(
            {ThreadPoolService, StreamServerEndpointService, StatsReporter} <= kinds
        )
        self.assertEqual(
            [type(s) for s in service.pipeline.consumers], [LatestFrameHub, SaveDirSink]
        )
        self.assertEqual(service.pipeline.consumers[1].directory, "/tmp/f")
        self.assertEqual(service.factory.maxMessageBytes, 4096)
        self.assertEqual(service.registry.maxStreams, 5)
        self.assertEqual(service.reporter.statsFile, "/tmp/s.json")
        self.assertEqual(reactor.tcpServers, [])

    def test_listensWhenStarted(self):
        """
        The service listens on --port once started, and stops cleanly.
        """
        reactor = MemoryReactorClock()
        service = makeService(parse("--port", "9123"), reactor=reactor)
        service.startService()
        self.assertEqual(reactor.tcpServers[0][0], 9123)
        self.successResultOf(service.stopService())

    def test_serviceMinimal(self):
        """
        Without --save-dir only the latest-frame hub receives frames.
        """
        service = makeService(parse(), reactor=MemoryReactorClock())
        self.assertEqual([type(s) for s in service.pipeline.consumers], [LatestFrameHub])
