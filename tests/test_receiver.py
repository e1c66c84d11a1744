"""
Tests for L{imageproto.receiver.service}, and for L{FrameReceiverProtocol} talking
to the real L{imageproto.receiver.registry.StreamRegistry}; ends with a real
C{twistd -n imageproto} process.
"""

import json
import os
import struct
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto import wire
from imageproto.protocol.factories import ReceiverFactory
from imageproto.receiver.service import (
    ReceiverService,
    StatsReporter,
    ThreadPoolService,
    writeJsonAtomically,
)
from imageproto.receiver.savedir import SaveDirSink
from tests.helpers import FAKE_JPEG, deliver, receiverStack, savedFrame
from imageproto.tap import freePort, twistdCommand
from tests.helpers import FakeThreads, makeJpeg

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None


def packed(message) -> bytes:
    """
    C{message} as it travels: length prefix and encoded bytes.
    """
    body = wire.encodeMessage(message)
    return struct.pack("!I", len(body)) + body


def unpacked(data: bytes) -> list:
    """
    Decode every whole message in C{data}.
    """
    messages = []
    while len(data) >= 4:
        (size,) = struct.unpack("!I", data[:4])
        if len(data) < 4 + size:
            break
        messages.append(wire.decodeMessage(data[4 : 4 + size]))
        data = data[4 + size :]
    return messages


class Connection:
    """
    One server protocol on a L{StringTransport}, fed bytes by the test.
    """

    def __init__(self, factory, port):
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", port)
        )
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def feed(self, data: bytes, chunk: int | None = None) -> None:
        if chunk is None:
            self.protocol.dataReceived(data)
        else:
            for i in range(0, len(data), chunk):
                self.protocol.dataReceived(data[i : i + chunk])

    def send(self, *messages, chunk=None) -> None:
        self.feed(b"".join(packed(m) for m in messages), chunk)

    def received(self) -> list:
        return unpacked(self.transport.value())

    def lose(self) -> None:
        self.protocol.connectionLost(error.ConnectionDone())


class ReceiverProtocolTests(SynchronousTestCase):
    """
    L{FrameReceiverProtocol} with the real registry and sinks.
    """

    maxBytes = 64 * 1024

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("OpenCV is needed to make test JPEGs")
        self.jpeg = makeJpeg(16, 12, (0, 128, 255))
        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        self.threads = FakeThreads()
        self.saveDir = self.mktemp()
        self.registry, self.pipeline = receiverStack(self.clock, maxStreams=4)
        self.factory = ReceiverFactory(
            self.registry,
            self.clock,
            maxMessageBytes=self.maxBytes,
            pipeline=self.pipeline,
        )
        self.seen = []
        self.pipeline.addConsumer(_Recorder(self.seen))

    def connect(self, port=40000):
        return Connection(self.factory, port)

    def frame(self, seq, jpeg=None):
        return wire.Frame(seq, self.jpeg if jpeg is None else jpeg, 999.9, 999.95, 0)

    def hello(self, connection, name="cam", session=5):
        connection.send(wire.Hello(name, wire.CAP_LIVE, session))

    def assertDisconnectedWith(self, connection, code):
        self.assertTrue(connection.transport.disconnecting)
        last = connection.received()[-1]
        self.assertIsInstance(last, wire.Error)
        self.assertEqual(last.code, code)
        return last

    def test_helloWelcome(self):
        """
        A good HELLO is answered with WELCOME carrying the server's message
        limit, and the stream is live.
        """
        c = self.connect()
        self.hello(c)
        [welcome] = c.received()
        self.assertEqual(welcome, wire.Welcome(0, self.maxBytes, 0))
        self.assertFalse(c.transport.disconnecting)
        self.assertTrue(self.registry.snapshot()["streams"]["cam"]["connected"])

    def test_badName(self):
        """
        A HELLO with a bad stream name gets ERROR 2 and a disconnect, and
        the refusal is logged with the peer.
        """
        c = self.connect()
        with capturedLogs() as events:
            self.hello(c, name="../etc")
        self.assertDisconnectedWith(c, wire.ERR_BAD_NAME)
        self.assertTrue(
            any("192.0.2.7" in str(e.get("peer")) for e in events), events
        )

    def test_streamLimit(self):
        """
        A HELLO over the live-stream limit gets ERROR 3.
        """
        for i in range(4):
            self.hello(self.connect(40000 + i), name=f"s{i}")
        c = self.connect(41000)
        self.hello(c, name="one-too-many")
        self.assertDisconnectedWith(c, wire.ERR_STREAM_LIMIT)

    def framesAreAcked(self, chunk):
        c = self.connect()
        c.send(
            wire.Hello("cam", 0, 1), *[self.frame(seq) for seq in range(3)], chunk=chunk
        )
        self.assertEqual(
            c.received(), [wire.Welcome(0, self.maxBytes, 0)] + [wire.Ack(s) for s in range(3)]
        )
        self.assertEqual([f.seq for f in self.seen], [0, 1, 2])
        self.assertEqual(self.seen[0].jpeg, self.jpeg)
        self.assertEqual(self.registry.stats("cam").frames, 3)

    def test_framesAckedWhole(self):
        """
        Frames fed in one write are each acknowledged.
        """
        self.framesAreAcked(None)

    def test_framesAckedSplit(self):
        """
        Frames fed in uneven pieces are each acknowledged.
        """
        self.framesAreAcked(97)

    def test_framesAckedByteByByte(self):
        """
        Frames fed one byte at a time are each acknowledged.
        """
        self.framesAreAcked(1)

    def test_notJpegRejected(self):
        """
        A FRAME whose payload is not a JPEG gets REJECT, is counted, never
        reaches a sink, and the connection stays up for the next frame.
        """
        c = self.connect()
        self.hello(c)
        c.send(self.frame(0, jpeg=b"GIF89a" + b"\x00" * 40), self.frame(1))
        self.assertEqual(
            [type(m) for m in c.received()], [wire.Welcome, wire.Reject, wire.Ack]
        )
        self.assertEqual(c.received()[1].seq, 0)
        self.assertFalse(c.transport.disconnecting)
        self.assertEqual(self.registry.stats("cam").rejected, 1)
        self.assertEqual([f.seq for f in self.seen], [1])

    def test_saveDirDelaysAck(self):
        """
        With a L{SaveDirSink}, the ACK goes out only after the file is
        written, and the file holds the frame's exact bytes.
        """
        self.pipeline.addConsumer(SaveDirSink(self.saveDir, self.threads))
        c = self.connect()
        self.hello(c)
        c.send(self.frame(4))
        self.assertEqual(len(c.received()), 1)
        self.threads.runAll()
        self.assertEqual(c.received()[-1], wire.Ack(4))
        with open(savedFrame(self.saveDir, "cam", 4), "rb") as f:
            self.assertEqual(f.read(), self.jpeg)

    def test_storeFailureRejects(self):
        """
        A frame that cannot be stored gets REJECT and the error is logged.
        """
        os.makedirs(self.saveDir)
        with open(os.path.join(self.saveDir, "cam"), "wb"):
            pass
        self.pipeline.addConsumer(SaveDirSink(self.saveDir, self.threads))
        c = self.connect()
        self.hello(c)
        c.send(self.frame(0))
        self.threads.runAll()
        self.assertIsInstance(c.received()[-1], wire.Reject)
        self.assertFalse(c.transport.disconnecting)
        self.assertEqual(self.registry.stats("cam").storageErrors, 1)

    def test_resentFrameAckedOnce(self):
        """
        After a reconnect in the same session, a resent frame is
        acknowledged again but reaches the sinks only once.
        """
        first = self.connect()
        self.hello(first, session=77)
        first.send(self.frame(0), self.frame(1))
        first.lose()
        second = self.connect(40001)
        self.hello(second, session=77)
        second.send(self.frame(1), self.frame(2))
        self.assertEqual(second.received()[1:], [wire.Ack(1), wire.Ack(2)])
        self.assertEqual([f.seq for f in self.seen], [0, 1, 2])
        stats = self.registry.snapshot()["streams"]["cam"]
        self.assertEqual((stats["duplicates"], stats["reconnects"]), (1, 1))

    def test_replaced(self):
        """
        A second connection under a live name takes it over: the first gets
        ERROR 9 and its later close does not disconnect the stream.
        """
        old = self.connect()
        self.hello(old)
        new = self.connect(40001)
        self.hello(new)
        self.assertDisconnectedWith(old, wire.ERR_REPLACED)
        old.lose()
        new.send(self.frame(0))
        self.assertEqual(new.received()[-1], wire.Ack(0))
        self.assertTrue(self.registry.snapshot()["streams"]["cam"]["connected"])

    def test_connectionLostDetaches(self):
        """
        Closing the connection marks the stream disconnected.
        """
        c = self.connect()
        self.hello(c)
        c.lose()
        self.assertFalse(self.registry.snapshot()["streams"]["cam"]["connected"])

    def test_frameJustUnderLimit(self):
        """
        A message exactly C{maxMessageBytes} long is accepted.
        """
        overhead = len(wire.encodeMessage(self.frame(0, jpeg=b"")))
        jpeg = self.jpeg[:-2] + b"\x00" * (self.maxBytes - overhead - len(self.jpeg)) + b"\xff\xd9"
        message = self.frame(0, jpeg=jpeg)
        self.assertEqual(len(wire.encodeMessage(message)), self.maxBytes)
        c = self.connect()
        self.hello(c)
        c.send(message, chunk=4096)
        self.assertEqual(c.received()[-1], wire.Ack(0))

    def badInputDisconnectsOnlyThatPeer(self, data: bytes, code: int, hello=True):
        """
        Feed C{data} to one connection while another streams: the bad one
        gets ERROR C{code}, is disconnected and logged by peer; the good one
        keeps getting ACKs.
        """
        good = self.connect(40001)
        self.hello(good, name="good")
        bad = self.connect(40002)
        if hello:
            self.hello(bad, name="bad")
        with capturedLogs() as events:
            bad.feed(data)
        self.assertDisconnectedWith(bad, code)
        self.assertTrue(
            any(e.get("peer") == "192.0.2.7:40002" for e in events), events
        )
        # Nothing more is read from the bad peer.
        before = bad.transport.value()
        bad.send(self.frame(99))
        self.assertEqual(bad.transport.value(), before)
        good.send(self.frame(0), self.frame(1))
        self.assertEqual(good.received()[-2:], [wire.Ack(0), wire.Ack(1)])
        self.assertFalse(good.transport.disconnecting)

    def test_frameBeforeHello(self):
        """
        A FRAME before HELLO is a protocol error for that peer only.
        """
        self.badInputDisconnectsOnlyThatPeer(
            packed(self.frame(0)), wire.ERR_PROTOCOL, hello=False
        )

    def test_garbage(self):
        """
        Bytes that are not a message are a protocol error for that peer only.
        """
        self.badInputDisconnectsOnlyThatPeer(
            struct.pack("!I", 10) + b"\x01garbage!!", wire.ERR_PROTOCOL
        )

    def test_unknownVersion(self):
        """
        A message of another protocol version gets ERROR 1.
        """
        body = bytearray(wire.encodeMessage(self.frame(0)))
        body[0] = 9
        self.badInputDisconnectsOnlyThatPeer(
            struct.pack("!I", len(body)) + bytes(body), wire.ERR_VERSION
        )

    def test_unknownType(self):
        """
        A message of an unknown type is a protocol error.
        """
        self.badInputDisconnectsOnlyThatPeer(
            struct.pack("!I", 2) + bytes([wire.PROTOCOL_VERSION, 0x7F]),
            wire.ERR_PROTOCOL,
        )

    def test_truncatedMessage(self):
        """
        A FRAME whose announced JPEG length overruns the message is a
        protocol error.
        """
        body = wire.encodeMessage(self.frame(0))[:-10]
        self.badInputDisconnectsOnlyThatPeer(
            struct.pack("!I", len(body)) + body, wire.ERR_PROTOCOL
        )

    def test_overLimit(self):
        """
        A length prefix over C{maxMessageBytes} gets ERROR 5 before the body
        is read.
        """
        self.badInputDisconnectsOnlyThatPeer(
            struct.pack("!I", self.maxBytes + 1), wire.ERR_TOO_LARGE
        )

    def test_secondHello(self):
        """
        A second HELLO on a connection is a protocol error.
        """
        self.badInputDisconnectsOnlyThatPeer(
            packed(wire.Hello("bad", 0, 1)), wire.ERR_PROTOCOL
        )


class _Recorder:
    def __init__(self, seen):
        self.seen = seen

    def frameReceived(self, frame):
        self.seen.append(frame)

    def streamStarted(self, name):
        pass

    def streamStopped(self, name):
        pass

    def close(self):
        pass


class WriteJsonTests(SynchronousTestCase):
    def test_atomic(self):
        """
        L{writeJsonAtomically} replaces the file whole and leaves no
        temporary file behind.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "stats.json")
        writeJsonAtomically(path, {"streams": {"a": 1}})
        writeJsonAtomically(path, {"streams": {"b": 2}})
        with open(path) as f:
            self.assertEqual(json.load(f), {"streams": {"b": 2}})
        self.assertEqual(os.listdir(directory), ["stats.json"])

    def test_strict(self):
        """
        The stats file is strict JSON: a figure that is not finite is
        written as null, not Infinity.
        """
        path = self.mktemp()
        writeJsonAtomically(path, {"latency_ms": {"p50": float("inf")}})
        with open(path) as f:
            self.assertEqual(
                json.load(f, parse_constant=self.fail), {"latency_ms": {"p50": None}}
            )


class StatsReporterTests(SynchronousTestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        self.clock.advance(500)
        self.registry, self.pipeline = receiverStack(self.clock)
        self.threads = FakeThreads()
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "stats.json")

    def reporter(self, **kw):
        return StatsReporter(self.registry, self.clock, self.threads, **kw)

    def read(self):
        with open(self.path) as f:
            return json.load(f)

    def test_fileEverySecond(self):
        """
        The stats file is written at start and every C{fileInterval}
        seconds, from a worker thread, with the registry's snapshot.
        """
        reporter = self.reporter(statsFile=self.path, logInterval=0)
        reporter.startService()
        self.threads.runAll()
        self.assertEqual(self.read(), {"streams": {}})
        stream = self.registry.attach("cam", 0, 1, object())
        deliver(self.pipeline, stream, wire.Frame(0, FAKE_JPEG, 499.0))
        self.clock.advance(0.5)
        self.assertEqual(self.threads.calls, [])
        self.clock.advance(0.5)
        self.assertEqual(len(self.threads.calls), 1)
        self.threads.runAll()
        self.assertEqual(self.read(), self.registry.snapshot())
        self.assertEqual(self.read()["streams"]["cam"]["frames"], 1)

    def test_finalWriteAtStop(self):
        """
        Stopping writes the file once more, after any write in progress, and
        the stop waits for it.
        """
        reporter = self.reporter(statsFile=self.path, logInterval=0)
        reporter.startService()
        self.assertEqual(len(self.threads.calls), 1)
        self.registry.attach("late", 0, 1, object())
        d = reporter.stopService()
        self.assertNoResult(d)
        self.threads.runAll()  # the write that was in progress
        self.assertNoResult(d)
        self.threads.runAll()  # the final one
        self.successResultOf(d)
        self.assertIn("late", self.read()["streams"])

    def test_writeFailureLogged(self):
        """
        A failed write is logged and the periodic writes go on.
        """
        reporter = self.reporter(
            statsFile=os.path.join(self.path, "missing", "x.json"), logInterval=0
        )
        reporter.startService()
        self.threads.runAll()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.threads.calls), 1)
        self.threads.runAll()
        self.flushLoggedErrors(OSError)

    def test_logsPeriodically(self):
        """
        Every C{logInterval} seconds each stream's statistics are logged as
        one event with the figures as keys.
        """
        reporter = self.reporter(logInterval=5.0)
        stream = self.registry.attach("cam", 0, 1, object())
        deliver(self.pipeline, stream, wire.Frame(0, FAKE_JPEG, 499.9))
        reporter.startService()
        with capturedLogs() as events:
            self.clock.advance(4.9)
            self.assertEqual(events, [])
            self.clock.advance(0.1)
        [event] = events
        self.assertEqual(
            (event["stream"], event["frames"], event["bytes"], event["state"]),
            ("cam", 1, len(FAKE_JPEG), "connected"),
        )
        self.assertAlmostEqual(event["p50"], 100.0, places=3)
        reporter.stopService()


class ReceiverServiceTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()

    def test_children(self):
        """
        The service is a pool, a listening port, a stats reporter and a
        shutdown step, with the hub as a sink and optional save-dir and
        callback sinks.
        """
        seen = []
        service = ReceiverService(
            "tcp:8080:interface=127.0.0.1",
            onFrame=seen.append,
            saveDir="/tmp/x",
            statsFile="/tmp/s.json",
            reactor=self.reactor,
            maxStreams=3,
            maxMessageBytes=12345,
        )
        kinds = [type(child) for child in service]
        self.assertIn(ThreadPoolService, kinds)
        self.assertIn(StreamServerEndpointService, kinds)
        self.assertIn(StatsReporter, kinds)
        self.assertEqual(
            [type(s).__name__ for s in service.pipeline.consumers],
            ["LatestFrameHub", "SaveDirSink", "CallbackSink"],
        )
        self.assertEqual(service.registry.maxStreams, 3)
        self.assertEqual(service.factory.maxMessageBytes, 12345)
        self.assertEqual(service.reporter.statsFile, "/tmp/s.json")
        self.assertEqual(self.reactor.tcpServers, [])

    def test_listensOnStart(self):
        """
        Starting listens on the endpoint with the receiver's factory;
        C{whenListening} fires with the port.
        """
        service = ReceiverService(9999, reactor=self.reactor)
        d = service.whenListening()
        self.assertNoResult(d)
        service.startService()
        [(port, factory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual(port, 9999)
        self.assertIs(factory, service.factory)
        self.assertEqual(self.successResultOf(d).getHost().port, 9999)
        self.successResultOf(service.whenListening())
        service.stopService()

    def test_stopClosesStreams(self):
        """
        Stopping tells live senders ERROR 8, waits for their connections to
        close, and stops the worker pool last.
        """
        service = ReceiverService(9999, reactor=self.reactor, statsInterval=0)
        service.startService()
        live = Connection(service.factory, 40000)
        live.send(wire.Hello("cam", 0, 1))
        d = service.stopService()
        self.assertEqual(live.received()[-1].code, wire.ERR_SHUTDOWN)
        self.assertNoResult(d)
        self.assertTrue(service.pool.running)
        live.lose()
        self.successResultOf(d)
        self.assertFalse(service.pool.running)


# --- a real twistd process ------------------------------------------------

TWISTD = twistdCommand()




class _Process(protocol.ProcessProtocol):
    def __init__(self):
        self.output = []
        self.ended = Deferred()

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback((reason.value.exitCode, reason.value.signal))


class _Client(Int32StringReceiver):
    """
    A minimal sender speaking L{wire} directly.
    """

    MAX_LENGTH = 1 << 24

    def connectionMade(self):
        self.messages = []
        self.waiters = []

    def stringReceived(self, data):
        self.messages.append(wire.decodeMessage(data))

    def send(self, message):
        self.sendString(wire.encodeMessage(message))


def poll(predicate, timeout=30.0, interval=0.05):
    """
    A L{Deferred} that fires when C{predicate()} is true, polling on the
    real reactor; fails after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout

    def check():
        if predicate():
            return True
        if reactor.seconds() > deadline:
            raise defer.TimeoutError(f"{predicate} still false after {timeout} s")
        return task.deferLater(reactor, interval, check)

    return defer.maybeDeferred(check)


class TwistdIntegrationTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_realReceiver(self):
        """
        C{twistd -n imageproto} accepts a sender on a real port, ACKs its
        frames, saves them byte for byte under --save-dir, writes the stats
        file, and exits cleanly on SIGTERM with a final stats file.
        """
        if cv2 is None:
            raise self.skipTest("OpenCV is needed to make test JPEGs")
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        saveDir = os.path.join(work, "frames")
        statsFile = os.path.join(work, "stats.json")
        port = freePort()
        process = _Process()
        args = TWISTD + [
            "imageproto",
            "--port", f"tcp:{port}:interface=127.0.0.1",
            "--save-dir", saveDir,
            "--stats-file", statsFile,
            "--stats-interval", "1",
        ]
        transport = reactor.spawnProcess(
            process, sys.executable, args, env=os.environ.copy(), path=work
        )
        ended = [False]
        process.ended.addBoth(lambda code: ended.__setitem__(0, True) or code)

        def cleanup():
            if not ended[0]:
                transport.signalProcess("KILL")
                return process.ended

        self.addCleanup(cleanup)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)
        factory = protocol.Factory.forProtocol(_Client)
        client = None
        deadline = reactor.seconds() + 30
        while client is None:
            try:
                client = yield endpoint.connect(factory)
            except error.ConnectError:
                if ended[0] or reactor.seconds() > deadline:
                    self.fail(b"".join(process.output).decode("utf-8", "replace"))
                yield task.deferLater(reactor, 0.1, lambda: None)

        jpegs = [makeJpeg(16, 12, (i * 40, 0, 0)) for i in range(5)]
        client.send(wire.Hello("itest", wire.CAP_LIVE, 1234))
        now = reactor.seconds()
        for seq, jpeg in enumerate(jpegs):
            client.send(wire.Frame(seq, jpeg, now, now, 0))
        client.send(wire.Frame(5, b"not a jpeg at all", now, now, 0))
        yield poll(lambda: len(client.messages) >= 7)
        self.assertIsInstance(client.messages[0], wire.Welcome)
        # Writes finish in any order in the worker pool, and so do the ACKs.
        answers = client.messages[1:]
        self.assertEqual(
            sorted(m.seq for m in answers if isinstance(m, wire.Ack)), list(range(5))
        )
        self.assertEqual(
            [m.seq for m in answers if isinstance(m, wire.Reject)], [5]
        )
        for seq, jpeg in enumerate(jpegs):
            with open(savedFrame(saveDir, "itest", seq), "rb") as f:
                self.assertEqual(f.read(), jpeg)

        def statsShow(frames, connected):
            try:
                with open(statsFile) as f:
                    stream = json.load(f)["streams"]["itest"]
            except (OSError, ValueError, KeyError):
                return False
            return stream["frames"] == frames and stream["connected"] == connected

        yield poll(lambda: statsShow(5, True))
        # Shut down with the sender still connected: it is told why.
        transport.signalProcess("TERM")
        exitCode, signal = yield process.ended
        output = b"".join(process.output).decode("utf-8", "replace")
        # twistd ends by re-raising the signal it shut down on, after a
        # clean shutdown; anything else is a crash.
        self.assertIn((exitCode, signal), [(0, None), (None, 15)], output)
        self.assertIn("Server Shut Down", output)
        yield poll(lambda: not client.transport.connected)
        self.assertEqual(client.messages[-1].code, wire.ERR_SHUTDOWN)
        with open(statsFile) as f:
            self.assertTrue(statsShow(5, False), output + f.read())
        with open(statsFile) as f:
            stream = json.load(f)["streams"]["itest"]
        self.assertEqual(
            (stream["rejected"], stream["bytes"]), (1, sum(len(j) for j in jpegs))
        )
        self.assertIn("stream itest", output)


class ConnectToTests(SynchronousTestCase):
    """
    L{ReceiverService.connectTo}: a receiver that connects out to a sender
    that listens, and is still the receiver on that connection.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.service = ReceiverService(None, reactor=self.reactor, statsInterval=0)

    def test_listensNowhere(self):
        """
        Without an endpoint the receiver has no port.
        """
        self.assertIsNone(self.service.listening)
        self.assertIsNone(self.successResultOf(self.service.whenListening()))

    def test_protocolIsTheReceivers(self):
        """
        The connection's protocol is a L{FrameReceiverProtocol} of the
        receiver's own factory: the same registry, pipeline and limits.
        """
        from imageproto.protocol.receiving import FrameReceiverProtocol

        subscription = self.service.connectTo("192.0.2.1", 5555)
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("192.0.2.1", 5555))
        self.assertIs(factory, subscription)
        proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 5555))
        self.assertIsInstance(proto, FrameReceiverProtocol)
        self.assertIs(proto.factory, self.service.factory)
        transport = StringTransport()
        proto.makeConnection(transport)
        # It waits for the sender's HELLO: the receiver never speaks first.
        self.assertEqual(transport.value(), b"")
        self.assertIn(proto, self.service.factory.peers)
        proto.connectionLost(error.ConnectionDone())

    def test_retriesWithBackoff(self):
        """
        A failed attempt is retried after a short, growing delay, never
        more than C{maxDelay} (with jitter) apart.
        """
        subscription = self.service.connectTo("192.0.2.1", 5555, initialDelay=0.1, maxDelay=0.5)
        connector = subscription.connector
        delays = []
        for _ in range(8):
            subscription.clientConnectionFailed(connector, error.ConnectionRefusedError())
            delays.append(subscription._callID.getTime() - self.reactor.seconds())
            self.reactor.advance(delays[-1])
        self.assertLess(delays[0], 0.2)
        self.assertLess(max(delays), 0.5 * 1.5)
        self.assertGreater(delays[-1], 0.3)
        subscription.stopTrying()
