# -*- test-case-name: tests.test_protocol -*-
"""
Tests for L{imageproto.protocol.framing}: the linear-time framing of
L{MessageProtocol}, and both ends' handling of every message, against stub
collaborators (no sockets, no real time).
"""

from __future__ import annotations

import struct

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto import wire
from imageproto.protocol.tokens import TokenTable, computeDigest
from imageproto.protocol.factories import ReceiverFactory, SenderFactory
from imageproto.protocol.framing import MessageProtocol
from imageproto.receiver.consumers import CallbackSink
from imageproto.wire import Refused
from tests.helpers import StubRegistry, receiverStack
from tests.helpers import TINY_JPEG, framed, protocolBlocks, wireBytes
from tests.helpers import messages as written


class _Holder:
    """
    A factory stand-in for the bare L{MessageProtocol}: just a clock.
    """

    def __init__(self) -> None:
        self.clock = Clock()


class RecordingProtocol(MessageProtocol):
    """
    A L{MessageProtocol} that keeps what it receives.
    """

    def __init__(self) -> None:
        self.received: list = []

    def messageReceived(self, message: wire.Message) -> None:
        self.received.append(message)


def recordingProtocol(maxLength: int | None = None):
    proto = RecordingProtocol()
    proto.factory = _Holder()
    if maxLength is not None:
        proto.MAX_LENGTH = maxLength
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


SAMPLE = [
    wire.Hello("cam-1", wire.CAP_LIVE, 42),
    wire.Frame(0, TINY_JPEG, 1.5, 2.5, 0),
    wire.Ping(7),
    wire.Frame(1, b"\xff\xd8\xff" + bytes(range(256)) + b"\xff\xd9", 3.0, 4.0, 1),
    wire.Bye("done"),
]
SAMPLE_BYTES = b"".join(framed(m) for m in SAMPLE)


class _CountingBuffer(bytearray):
    """
    A C{bytearray} that counts the bytes appended to it and copied out of it.
    """

    appended = 0
    copied = 0
    copies = 0

    def __iadd__(self, data):
        self.appended += len(data)
        return super().__iadd__(data)

    def __getitem__(self, index):
        chunk = super().__getitem__(index)
        if isinstance(index, slice):
            self.copied += len(chunk)
            self.copies += 1
        return chunk

    def __bytes__(self):
        self.copied += len(self)
        self.copies += 1
        return super().__bytes__()


class FramingTests(SynchronousTestCase):
    """
    L{MessageProtocol} turns a byte stream into messages however the bytes
    are split into reads.
    """

    def test_wholeMessages(self):
        """
        Messages delivered one read each are received in order.
        """
        proto, _ = recordingProtocol()
        for message in SAMPLE:
            proto.dataReceived(framed(message))
        self.assertEqual(proto.received, SAMPLE)

    def test_manyMessagesInOneRead(self):
        """
        Several messages in one read are all received, in order.
        """
        proto, transport = recordingProtocol()
        proto.dataReceived(SAMPLE_BYTES * 3)
        self.assertEqual(proto.received, SAMPLE * 3)
        self.assertFalse(transport.disconnecting)

    def test_splitAtEveryOffset(self):
        """
        The stream split into two reads at any offset gives the same
        messages.
        """
        for offset in range(len(SAMPLE_BYTES) + 1):
            proto, _ = recordingProtocol()
            proto.dataReceived(SAMPLE_BYTES[:offset])
            proto.dataReceived(SAMPLE_BYTES[offset:])
            self.assertEqual(proto.received, SAMPLE, offset)

    def test_byteByByte(self):
        """
        The stream delivered one byte per read gives the same messages, each
        as soon as its last byte arrives.
        """
        proto, _ = recordingProtocol()
        ends = []
        total = 0
        for message in SAMPLE:
            total += len(framed(message))
            ends.append(total)
        for i in range(len(SAMPLE_BYTES)):
            proto.dataReceived(SAMPLE_BYTES[i : i + 1])
            self.assertEqual(len(proto.received), sum(1 for e in ends if e <= i + 1))
        self.assertEqual(proto.received, SAMPLE)

    def test_emptyRead(self):
        """
        An empty read delivers nothing and breaks nothing.
        """
        proto, _ = recordingProtocol()
        proto.dataReceived(b"")
        proto.dataReceived(SAMPLE_BYTES[:3])
        proto.dataReceived(b"")
        proto.dataReceived(SAMPLE_BYTES[3:])
        self.assertEqual(proto.received, SAMPLE)

    def test_overLimitLength(self):
        """
        A length prefix over C{MAX_LENGTH} makes the protocol write ERROR 5
        and disconnect without reading the message or anything after it.
        """
        proto, transport = recordingProtocol(maxLength=100)
        proto.dataReceived(framed(wire.Ping(1)) + struct.pack("!I", 101) + b"x" * 10)
        proto.dataReceived(b"x" * 91 + framed(wire.Ping(2)))
        self.assertEqual(proto.received, [wire.Ping(1)])
        [error] = written(transport)
        self.assertIsInstance(error, wire.Error)
        self.assertEqual(error.code, wire.ERR_TOO_LARGE)
        self.assertIn("101", error.reason)
        self.assertTrue(transport.disconnecting)

    def test_lengthAtLimit(self):
        """
        A message exactly C{MAX_LENGTH} bytes long is received.
        """
        message = wire.Frame(3, b"j" * 50)
        size = len(wire.encodeMessage(message))
        proto, transport = recordingProtocol(maxLength=size)
        proto.dataReceived(framed(message))
        self.assertEqual(proto.received, [message])
        self.assertFalse(transport.disconnecting)

    def test_httpRequestIsOverLimit(self):
        """
        An HTTP client that connects by mistake is refused at once: its
        first four bytes read as a length of about 1.2 GB.
        """
        proto, transport = recordingProtocol()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual([m.code for m in written(transport)], [wire.ERR_TOO_LARGE])
        self.assertTrue(transport.disconnecting)

    def test_malformedMessage(self):
        """
        A malformed message gets ERROR 4; a wrong version ERROR 1; both
        disconnect, and later messages in the same read are not delivered.
        """
        for body, code in [
            (b"\x01\xff", wire.ERR_PROTOCOL),
            (b"\x01\x04\x00", wire.ERR_PROTOCOL),
            (b"\x02\x04" + b"\x00" * 8, wire.ERR_VERSION),
        ]:
            proto, transport = recordingProtocol()
            proto.dataReceived(
                struct.pack("!I", len(body)) + body + framed(wire.Ping(1))
            )
            self.assertEqual(proto.received, [])
            self.assertEqual([m.code for m in written(transport)], [code])
            self.assertTrue(transport.disconnecting)

    def test_pauseAndResume(self):
        """
        A paused protocol delivers nothing, even of messages already
        buffered; resuming delivers them in order.
        """
        proto, transport = recordingProtocol()
        proto.dataReceived(framed(SAMPLE[0]))
        proto.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        proto.dataReceived(SAMPLE_BYTES)
        self.assertEqual(proto.received, SAMPLE[:1])
        proto.resumeProducing()
        self.assertEqual(proto.received, SAMPLE[:1] + SAMPLE)

    def test_pauseFromMessageReceived(self):
        """
        Pausing while handling a message stops delivery of the rest of the
        same read.
        """
        proto, _ = recordingProtocol()
        proto.messageReceived = lambda m: (proto.received.append(m), proto.pauseProducing())
        proto.dataReceived(SAMPLE_BYTES)
        self.assertEqual(proto.received, SAMPLE[:1])
        proto.resumeProducing()
        self.assertEqual(proto.received, SAMPLE[:2])

    def test_linear(self):
        """
        A 4 MiB message in 64 KiB reads is received with each byte appended
        to one reused buffer once and never copied out of it: the decoder
        reads it through a view, so the work per read does not grow with
        what is already buffered.
        """
        proto, _ = recordingProtocol()
        buffer = proto._buffer = _CountingBuffer()
        message = wire.Frame(9, b"\xff\xd8\xff" + b"\x00" * (4 * 2**20) + b"\xff\xd9")
        data = framed(message)
        chunk = 64 * 1024
        for start in range(0, len(data), chunk):
            proto.dataReceived(data[start : start + chunk])
        self.assertEqual(proto.received, [message])
        self.assertIs(proto._buffer, buffer)
        self.assertEqual(buffer.appended, len(data))
        self.assertEqual(buffer.copies, 0)
        self.assertEqual(buffer.copied, 0)
        self.assertEqual(len(buffer), 0)

    def test_wholeMessagesNotBuffered(self):
        """
        Messages that lie wholly inside one read are decoded in place: only
        the bytes of a message split across reads go into the buffer, and
        the messages after it in the same read do not.
        """
        proto, _ = recordingProtocol()
        buffer = proto._buffer = _CountingBuffer()
        data = SAMPLE_BYTES * 3
        proto.dataReceived(SAMPLE_BYTES)
        self.assertEqual(buffer.appended, 0)
        split = len(framed(SAMPLE[0])) + 3
        proto.dataReceived(data[:split])
        proto.dataReceived(data[split:])
        self.assertEqual(proto.received, SAMPLE * 4)
        self.assertEqual(buffer.appended, len(framed(SAMPLE[1])))
        self.assertEqual(buffer.copies, 0)
        self.assertEqual(len(buffer), 0)


def receiver(maxMessageBytes: int = wire.Welcome().maxMessageBytes, **kwargs):
    clock = Clock()
    clock.advance(1000)
    registry = StubRegistry(clock)
    factory = ReceiverFactory(
        registry, clock, maxMessageBytes=maxMessageBytes, pipeline=registry, **kwargs
    )
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, registry


HELLO = wire.Hello("cam-1", wire.CAP_LIVE, 77)


class _DirectTcp:
    """
    What L{imageproto.protocol.direct.sendNow} reads of a plain TCP
    connection, with a socket that takes every byte and records each send.
    """

    disconnecting = False
    connected = True
    _tempDataLen = 0
    offset = 0
    dataBuffer = b""

    def __init__(self) -> None:
        self.sent = []
        self.socket = self

    def sendmsg(self, parts) -> int:
        self.sent.append(b"".join(parts))
        return len(self.sent[-1])


class ReceiverProtocolTests(SynchronousTestCase):
    """
    L{FrameReceiverProtocol} answers a sender as PROTOCOL.md says.
    """

    def handshake(self, **kwargs):
        proto, transport, registry = receiver(**kwargs)
        proto.dataReceived(framed(HELLO))
        self.assertIsInstance(written(transport)[0], wire.Welcome)
        transport.clear()
        return proto, transport, registry

    def assertDroppedWith(self, transport, code):
        messages = written(transport)
        self.assertTrue(messages, "nothing written")
        self.assertIsInstance(messages[-1], wire.Error)
        self.assertEqual(messages[-1].code, code)
        self.assertTrue(transport.disconnecting)

    def test_helloWelcome(self):
        """
        HELLO attaches the stream and is answered by WELCOME carrying the
        factory's capabilities, maximum message size and heartbeat.
        """
        proto, transport, registry = receiver(
            maxMessageBytes=123456, capabilities=wire.SCAP_DETECT
        )
        proto.dataReceived(framed(HELLO))
        self.assertEqual(written(transport), [wire.Welcome(wire.SCAP_DETECT, 123456, 0)])
        self.assertEqual(registry.attached, [("cam-1", proto)])
        self.assertFalse(transport.disconnecting)

    def test_acksStraightToTheSocket(self):
        """
        On a plain TCP connection holding nothing unsent, the ACKs of one
        read go straight to the socket in one send, not through the
        transport's buffer; while the transport holds data they queue
        behind it.
        """
        proto, transport, registry = self.handshake()
        direct = _DirectTcp()
        proto._tcp = direct
        proto.dataReceived(framed(wire.Frame(0, TINY_JPEG)) + framed(wire.Frame(1, TINY_JPEG)))
        self.assertEqual(direct.sent, [wire.encodeAcks([0, 1])])
        self.assertEqual(transport.value(), b"")
        direct.dataBuffer = b"held"
        proto.dataReceived(framed(wire.Frame(2, TINY_JPEG)))
        self.assertEqual(direct.sent, [wire.encodeAcks([0, 1])])
        self.assertEqual(written(transport), [wire.Ack(2)])

    def test_refused(self):
        """
        A HELLO the registry refuses is answered with ERROR carrying the
        refusal's code and reason, then the connection closes.
        """
        proto, transport, registry = receiver()
        registry.refusals["bad name"] = Refused(wire.ERR_BAD_NAME, "invalid stream name")
        proto.dataReceived(framed(wire.Hello("bad name")) + framed(wire.Frame(0, TINY_JPEG)))
        self.assertEqual(written(transport), [wire.Error(wire.ERR_BAD_NAME, "invalid stream name")])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(registry.frames, [])

    def test_frameBeforeHello(self):
        """
        A FRAME before HELLO is a protocol error and never reaches the
        registry.
        """
        proto, transport, registry = receiver()
        proto.dataReceived(framed(wire.Frame(0, TINY_JPEG)))
        self.assertDroppedWith(transport, wire.ERR_PROTOCOL)
        self.assertEqual(registry.frames, [])

    def test_secondHello(self):
        """
        A second HELLO is a protocol error.
        """
        proto, transport, registry = self.handshake()
        proto.dataReceived(framed(wire.Hello("cam-2")))
        self.assertDroppedWith(transport, wire.ERR_PROTOCOL)
        self.assertEqual(len(registry.attached), 1)

    def test_serverOnlyMessages(self):
        """
        Messages only a server sends (WELCOME, ACK, REJECT, RESULT,
        CHALLENGE) are protocol errors from a sender.
        """
        for message in [
            wire.Welcome(),
            wire.Ack(0),
            wire.Reject(0),
            wire.Result(0),
            wire.Challenge(b"n" * 32),
        ]:
            proto, transport, _ = self.handshake()
            proto.dataReceived(framed(message))
            self.assertDroppedWith(transport, wire.ERR_PROTOCOL)

    def test_garbage(self):
        """
        Garbage inside a length prefix, before or after the handshake, is
        answered with ERROR 4 and a disconnect.
        """
        for handshake in (False, True):
            if handshake:
                proto, transport, _ = self.handshake()
            else:
                proto, transport, _ = receiver()
            proto.dataReceived(b"\x00\x00\x00\x05\x01\x03abc")
            self.assertDroppedWith(transport, wire.ERR_PROTOCOL)

    def test_badVersion(self):
        """
        A HELLO of another protocol version is answered with ERROR 1.
        """
        proto, transport, registry = receiver()
        body = b"\x02" + wire.encodeMessage(HELLO)[1:]
        proto.dataReceived(struct.pack("!I", len(body)) + body)
        self.assertDroppedWith(transport, wire.ERR_VERSION)
        self.assertEqual(registry.attached, [])

    def test_frameAcked(self):
        """
        A JPEG FRAME goes to the registry with the clock's time and is
        acknowledged once the registry's Deferred fires.
        """
        proto, transport, registry = self.handshake()
        pending = Deferred()
        registry.answers[5] = pending
        frame = wire.Frame(5, TINY_JPEG, 999.0, 999.5, 2)
        proto.dataReceived(framed(frame))
        self.assertEqual(registry.frames, [("cam-1", frame, 1000.0)])
        self.assertEqual(written(transport), [])
        pending.callback(None)
        self.assertEqual(written(transport), [wire.Ack(5)])

    def test_acksInCompletionOrder(self):
        """
        ACKs go out in the order the registry finishes with frames.
        """
        proto, transport, registry = self.handshake()
        first, second = Deferred(), Deferred()
        registry.answers.update({0: first, 1: second})
        proto.dataReceived(framed(wire.Frame(0, TINY_JPEG)) + framed(wire.Frame(1, TINY_JPEG)))
        second.callback(None)
        first.callback(None)
        self.assertEqual(written(transport), [wire.Ack(1), wire.Ack(0)])

    def test_acksOfOneReadInOneWrite(self):
        """
        Frames accepted at once while one read is handled are acknowledged,
        in order, in a single write at the end of that read; an answer
        decided after them (a PONG) goes after them.
        """
        proto, transport, registry = self.handshake()
        writes = []
        write = transport.write
        transport.write = lambda data: (writes.append(data), write(data))
        proto.dataReceived(
            b"".join(framed(wire.Frame(seq, TINY_JPEG)) for seq in range(3))
            + framed(wire.Ping(4))
            + framed(wire.Frame(3, TINY_JPEG))
        )
        self.assertEqual(
            written(transport),
            [wire.Ack(0), wire.Ack(1), wire.Ack(2), wire.Pong(4), wire.Ack(3)],
        )
        self.assertEqual(len(writes), 3)
        self.assertEqual(writes[0], wire.encodeAcks([0, 1, 2]))

    def test_nonJpegRejected(self):
        """
        With the real registry and pipeline, a FRAME whose payload is not a
        JPEG is REJECTed and counted without reaching a consumer; the
        connection stays and the next frame is acknowledged.
        """
        clock = Clock()
        seen = []
        registry, pipeline = receiverStack(clock, [CallbackSink(seen.append)])
        proto = ReceiverFactory(registry, clock, pipeline=pipeline).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(framed(HELLO))
        transport.clear()
        proto.dataReceived(framed(wire.Frame(3, b"PNG?")) + framed(wire.Frame(4, TINY_JPEG)))
        self.assertEqual(
            written(transport),
            [wire.Reject(3, "payload is not a JPEG"), wire.Ack(4)],
        )
        self.assertEqual(registry.stats("cam-1").rejected, 1)
        self.assertEqual([f.seq for f in seen], [4])
        self.assertFalse(transport.disconnecting)

    def metadataReceiver(self):
        clock = Clock()
        seen = []
        registry, pipeline = receiverStack(clock, [CallbackSink(seen.append)])
        proto = ReceiverFactory(registry, clock, pipeline=pipeline).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(framed(wire.Hello("cam-1", wire.CAP_METADATA, 77)))
        transport.clear()
        return proto, transport, registry, seen

    def test_metadataReachesConsumers(self):
        """
        A FRAME's metadata, split over reads like any message, reaches the
        pipeline's consumers decoded, and the frame is acknowledged.
        """
        proto, transport, registry, seen = self.metadataReceiver()
        data = framed(wire.Frame(0, TINY_JPEG, metadata='{"site":"door"}')) + framed(
            wire.Frame(1, TINY_JPEG)
        )
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
        self.assertEqual(written(transport), [wire.Ack(0), wire.Ack(1)])
        self.assertEqual([f.metadata for f in seen], [{"site": "door"}, None])

    def test_badMetadataDropsThePeer(self):
        """
        A FRAME whose metadata breaks the rules (here a JSON array) is a
        malformed message: ERROR 4, the connection closes, nothing reaches
        a consumer and the frame is neither acknowledged nor rejected.
        """
        proto, transport, registry, seen = self.metadataReceiver()
        body = wire.encodeMessage(wire.Frame(0, TINY_JPEG)) + struct.pack("!H", 3) + b"[1]"
        with capturedLogs() as events:
            proto.dataReceived(struct.pack("!I", len(body)) + body)
        self.assertDroppedWith(transport, wire.ERR_PROTOCOL)
        self.assertEqual(len(written(transport)), 1)
        self.assertEqual(seen, [])
        self.assertEqual(registry.stats("cam-1").rejected, 0)
        self.assertTrue(
            any("metadata" in formatEvent(e) for e in events if e["log_level"].name == "warn")
        )

    def test_registryFailureRejects(self):
        """
        A frame whose registry Deferred fails is REJECTed, the failure is
        logged, and the connection stays.
        """
        proto, transport, registry = self.handshake()
        registry.answers[8] = fail(Failure(OSError("disk full")))
        proto.dataReceived(framed(wire.Frame(8, TINY_JPEG)))
        [reject] = written(transport)
        self.assertIsInstance(reject, wire.Reject)
        self.assertEqual(reject.seq, 8)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_bye(self):
        """
        BYE closes the connection without an answer.
        """
        proto, transport, _ = self.handshake()
        proto.dataReceived(framed(wire.Bye("done")))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_byeLoggedWithItsReason(self):
        """
        The BYE that closes a connection is logged with the peer, the stream
        and the message itself, under a key the legacy log bridge leaves
        alone.
        """
        proto, transport, _ = self.handshake()
        with capturedLogs() as events:
            proto.dataReceived(framed(wire.Bye("end of clip")))
        (event,) = [e for e in events if "said" in e]
        self.assertEqual(event["said"], wire.Bye("end of clip"))
        self.assertEqual(event["stream"], "cam-1")
        self.assertIn("end of clip", formatEvent(event))

    def test_nothingSentAfterBye(self):
        """
        A frame still being stored when BYE arrives is not acknowledged on
        the closing connection.
        """
        proto, transport, registry = self.handshake()
        pending = Deferred()
        registry.answers[0] = pending
        proto.dataReceived(framed(wire.Frame(0, TINY_JPEG)) + framed(wire.Bye()))
        pending.callback(None)
        self.assertEqual(transport.value(), b"")

    def test_ping(self):
        """
        PING, before or after the handshake, is answered by PONG with the
        same token.
        """
        proto, transport, _ = receiver()
        proto.dataReceived(framed(wire.Ping(2**64 - 1)))
        self.assertEqual(written(transport), [wire.Pong(2**64 - 1)])
        transport.clear()
        proto.dataReceived(framed(HELLO) + framed(wire.Ping(3)))
        self.assertEqual(written(transport)[1:], [wire.Pong(3)])

    def test_pongIgnored(self):
        """
        A PONG is accepted silently.
        """
        proto, transport, _ = self.handshake()
        proto.dataReceived(framed(wire.Pong(12)))
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)

    def test_senderError(self):
        """
        An ERROR from the sender closes the connection without an ERROR in
        answer.
        """
        proto, transport, _ = self.handshake()
        proto.dataReceived(framed(wire.Error(wire.ERR_PROTOCOL, "what?")))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_replaced(self):
        """
        L{FrameReceiverProtocol.replaced} sends ERROR 9 and disconnects.
        """
        proto, transport, _ = self.handshake()
        proto.replaced()
        self.assertDroppedWith(transport, wire.ERR_REPLACED)

    def test_connectionLostDetaches(self):
        """
        Losing the connection after the handshake detaches the stream.
        """
        proto, _, registry = self.handshake()
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(registry.detached, [("cam-1", proto)])

    def test_workedExample(self):
        """
        Fed the sender's lines of PROTOCOL.md's worked example, the receiver
        (its real registry and pipeline) writes exactly the receiver's
        lines, and closes after the BYE.
        """
        clock = Clock()
        registry, pipeline = receiverStack(clock)
        factory = ReceiverFactory(registry, clock, pipeline=pipeline)
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        [session] = protocolBlocks("session")
        lines = [line.split(" ", 1) for line in session.splitlines() if line and line[0] in "CS"]
        expected = b""
        for direction, hexText in lines:
            if direction == "C":
                self.assertEqual(transport.value().hex(), expected.hex())
                proto.dataReceived(wireBytes(hexText))
            else:
                expected += wireBytes(hexText)
        self.assertEqual(transport.value().hex(), expected.hex())
        self.assertTrue(transport.disconnecting)


TOKEN = "imageproto-test-token-0001"


class ReceiverStateTests(SynchronousTestCase):
    """
    L{FrameReceiverProtocol}'s handshake states (awaiting HELLO, challenged,
    streaming, closed) each answer every message as PROTOCOL.md says.
    """

    def receiver(self, tokens: bool = False, before=()):
        proto, transport, registry = receiver()
        if tokens:
            proto.factory.tokens = TokenTable.parse(f"{TOKEN} *")
        for message in before:
            proto.dataReceived(framed(message))
        transport.clear()
        return proto, transport, registry

    def test_unexpectedNamesTheState(self):
        """
        A message out of place gets ERROR 4 whose reason says where the
        connection was (FRAME before HELLO, also while challenged; HELLO
        after the handshake, also while challenged; AUTH without a
        challenge), logged with the peer, and nothing reaches the registry.
        """
        authHello = wire.Hello("cam-1", wire.CAP_AUTH)
        auth = wire.Auth(b"c" * 32, b"d" * 32)
        cases = [
            (False, [], wire.Frame(0, TINY_JPEG), "unexpected FRAME before HELLO"),
            (True, [authHello], wire.Frame(0, TINY_JPEG), "unexpected FRAME before HELLO"),
            (True, [authHello], authHello, "unexpected HELLO after the handshake"),
            (False, [HELLO], HELLO, "unexpected HELLO after the handshake"),
            (False, [], auth, "unexpected AUTH to the server"),
            (False, [HELLO], auth, "unexpected AUTH to the server"),
        ]
        for tokens, before, message, reason in cases:
            proto, transport, registry = self.receiver(tokens, before)
            attached = list(registry.attached)
            with capturedLogs() as events:
                proto.dataReceived(framed(message) + framed(wire.Frame(1, TINY_JPEG)))
            self.assertEqual(written(transport), [wire.Error(wire.ERR_PROTOCOL, reason)])
            self.assertTrue(transport.disconnecting)
            self.assertEqual(registry.frames, [])
            self.assertEqual(registry.attached, attached)
            [event] = [e for e in events if e["log_format"].endswith("; disconnecting")]
            self.assertEqual(
                (event["peer"], event["kind"], event["when"]),
                (proto.peer, reason.split()[1], reason.split(" ", 2)[2]),
            )

    def test_challengeThenStream(self):
        """
        With tokens, HELLO is answered by CHALLENGE and attaches nothing; a
        correct AUTH attaches the stream and is answered by WELCOME, after
        which FRAMEs are acknowledged.
        """
        proto, transport, registry = self.receiver(tokens=True)
        proto.dataReceived(framed(wire.Hello("cam-1", wire.CAP_AUTH)))
        [challenge] = written(transport)
        self.assertIsInstance(challenge, wire.Challenge)
        self.assertEqual(registry.attached, [])
        transport.clear()
        nonce = b"s" * 32
        digest = computeDigest(TOKEN.encode(), challenge.nonce, nonce, "cam-1")
        proto.dataReceived(
            framed(wire.Auth(nonce, digest)) + framed(wire.Frame(0, TINY_JPEG))
        )
        [welcome, ack] = written(transport)
        self.assertIsInstance(welcome, wire.Welcome)
        self.assertEqual(ack, wire.Ack(0))
        self.assertEqual(registry.attached, [("cam-1", proto)])
        self.assertFalse(transport.disconnecting)

    def test_goodbyeDuringHandshake(self):
        """
        BYE or ERROR from the peer before HELLO, or while challenged, closes
        the connection without an answer, logged with no stream name.
        """
        for tokens, before in [(False, []), (True, [wire.Hello("cam-1", wire.CAP_AUTH)])]:
            for goodbye in [wire.Bye("later"), wire.Error(wire.ERR_PROTOCOL, "no")]:
                proto, transport, registry = self.receiver(tokens, before)
                with capturedLogs() as events:
                    proto.dataReceived(framed(goodbye) + framed(HELLO))
                self.assertEqual(transport.value(), b"")
                self.assertTrue(transport.disconnecting)
                self.assertEqual(registry.attached, [])
                [event] = [e for e in events if "closes" in e["log_format"]]
                self.assertIsNone(event["stream"])

    def test_closedStillDetaches(self):
        """
        A connection we closed after the handshake (replaced) detaches its
        stream when it is lost; a timeout in between is reported as "no
        data" and sends nothing more.
        """
        proto, transport, registry = self.receiver(before=[HELLO])
        proto.replaced()
        transport.clear()
        with capturedLogs() as events:
            proto.timedOut(5)
        self.assertEqual(transport.value(), b"")
        self.assertEqual([e["what"] for e in events if "what" in e], ["data"])
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(registry.detached, [("cam-1", proto)])

    def test_refusedNeverDetaches(self):
        """
        A connection refused at HELLO attaches and detaches nothing, and a
        timeout after the refusal is reported as "no handshake".
        """
        proto, transport, registry = self.receiver()
        registry.refusals["cam-1"] = Refused(wire.ERR_BAD_NAME, "no")
        proto.dataReceived(framed(HELLO))
        transport.clear()
        with capturedLogs() as events:
            proto.timedOut(5)
        self.assertEqual([e["what"] for e in events if "what" in e], ["handshake"])
        self.assertEqual(transport.value(), b"")
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(registry.detached, [])


class StubSender:
    """
    Enough of L{imageproto.sender.flow.FrameSender} for the sending protocol: it
    records what the protocol tells it.
    """

    def __init__(self, hello=HELLO) -> None:
        self._hello = hello
        self.calls: list = []

    def hello(self):
        return self._hello

    def connected(self, protocol, welcome):
        self.calls.append(("connected", welcome))

    def acked(self, seq):
        self.calls.append(("acked", seq))

    def rejected(self, seq, reason, retry=False):
        self.calls.append(("rejected", seq, reason))

    def resultReceived(self, result):
        self.calls.append(("result", result))

    def refused(self, error):
        self.calls.append(("refused", error))

    def failed(self, error):
        self.calls.append(("failed", error))

    def disconnected(self, protocol, reason):
        self.calls.append(("disconnected",))

    def fail(self, reason):
        self.calls.append(("fail", reason))


def sender(maxMessageBytes: int = wire.Welcome().maxMessageBytes, token=None):
    stub = StubSender()
    factory = SenderFactory(stub, clock=Clock(), maxMessageBytes=maxMessageBytes)
    factory.token = token
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, stub, factory


class SenderProtocolTests(SynchronousTestCase):
    """
    L{FrameSenderProtocol} says HELLO and relays the receiver's answers to
    its sender.
    """

    def welcomed(self):
        proto, transport, stub, factory = sender()
        proto.dataReceived(framed(wire.Welcome()))
        transport.clear()
        del stub.calls[:]
        return proto, transport, stub

    def test_framesOfATurnInOneSend(self):
        """
        On plain TCP the FRAMEs sent in one reactor turn go to the socket
        together at its end, in one C{sendmsg}; a message sent after them
        (a BYE, a PONG) first sends them, so it cannot overtake them.
        """
        proto, transport, stub = self.welcomed()
        direct = proto._tcp = _DirectTcp()
        frames = [wire.Frame(seq, TINY_JPEG, 1.0, 2.0) for seq in range(3)]
        for frame in frames:
            proto.sendFrame(frame)
        self.assertEqual(direct.sent, [])
        proto.factory.clock.advance(0)
        self.assertEqual(direct.sent, [b"".join(framed(f) for f in frames)])
        proto.sendFrame(frames[0])
        proto.answerPing(wire.Ping(5))
        self.assertEqual(direct.sent[1:], [framed(frames[0])])
        self.assertEqual(written(transport), [wire.Pong(5)])
        proto.factory.clock.advance(0)
        self.assertEqual(len(direct.sent), 2)

    def test_framesQueuedBehindHeldData(self):
        """
        While the transport still holds data, the turn's FRAMEs are queued
        behind it, as one write.
        """
        proto, transport, stub = self.welcomed()
        direct = proto._tcp = _DirectTcp()
        direct.dataBuffer = b"held"
        frames = [wire.Frame(seq, TINY_JPEG, 1.0, 2.0) for seq in range(2)]
        for frame in frames:
            proto.sendFrame(frame)
        proto.factory.clock.advance(0)
        self.assertEqual(direct.sent, [])
        self.assertEqual(written(transport), frames)

    def test_unwrittenFramesDroppedWithTheConnection(self):
        """
        FRAMEs of a turn whose connection is lost before its end are not
        written (the sender sends them again after a reconnect, as every
        unacknowledged frame), and nothing is left scheduled.
        """
        proto, transport, stub = self.welcomed()
        direct = proto._tcp = _DirectTcp()
        proto.sendFrame(wire.Frame(0, TINY_JPEG, 1.0, 2.0))
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(proto.factory.clock.getDelayedCalls(), [])
        self.assertEqual(direct.sent, [])

    def test_helloOnConnect(self):
        """
        Connecting writes the sender's HELLO and registers a transport
        producer whose C{paused} flag follows the transport.
        """
        proto, transport, _, _ = sender()
        self.assertEqual(transport.value(), framed(HELLO))
        self.assertIs(transport.producer, proto.pressure)
        self.assertFalse(proto.pressure.paused)
        transport.producer.pauseProducing()
        self.assertTrue(proto.pressure.paused)
        transport.producer.resumeProducing()
        self.assertFalse(proto.pressure.paused)

    def test_welcome(self):
        """
        WELCOME tells the sender it is connected and resets the factory's
        reconnection backoff.
        """
        proto, transport, stub, factory = sender()
        factory.retries = 4
        factory.delay = 30.0
        welcome = wire.Welcome(wire.SCAP_DETECT, 5000, 0)
        proto.dataReceived(framed(welcome))
        self.assertEqual(stub.calls, [("connected", welcome)])
        self.assertEqual(factory.retries, 0)
        self.assertEqual(factory.delay, factory.initialDelay)
        self.assertEqual(proto.welcomed, welcome)

    def test_answersRelayedAfterWelcome(self):
        """
        After WELCOME, ACK, REJECT and RESULT reach the sender.
        """
        proto, transport, stub = self.welcomed()
        result = wire.Result(1, [{"label": "dog", "confidence": 0.5, "box": [1, 2, 3, 4]}], 10)
        proto.dataReceived(
            framed(wire.Ack(0)) + framed(wire.Reject(2, "nope")) + framed(result)
        )
        self.assertEqual(
            stub.calls, [("acked", 0), ("rejected", 2, "nope"), ("result", result)]
        )
        self.assertEqual(transport.value(), b"")

    def test_acksOfAReadTogether(self):
        """
        To a sender with C{ackedAll}, the ACKs of one read go together, in
        order, at its end; any other message of the read is relayed after
        the ACKs before it and before those after it.
        """

        class BatchingSender(StubSender):
            def ackedAll(self, seqs):
                self.calls.append(("ackedAll", list(seqs)))

        stub = BatchingSender()
        factory = SenderFactory(stub, clock=Clock())
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        proto.dataReceived(framed(wire.Welcome()))
        del stub.calls[:]
        proto.dataReceived(framed(wire.Ack(0)) + framed(wire.Ack(1)) + framed(wire.Ack(2)))
        proto.dataReceived(
            framed(wire.Ack(3)) + framed(wire.Reject(4, "nope")) + framed(wire.Ack(5))
        )
        self.assertEqual(
            stub.calls,
            [
                ("ackedAll", [0, 1, 2]),
                ("ackedAll", [3]),
                ("rejected", 4, "nope"),
                ("ackedAll", [5]),
            ],
        )

    def test_acksBeforeAnOversizedMessage(self):
        """
        ACKs read before a length over the limit reach the sender before
        the connection fails.
        """

        class BatchingSender(StubSender):
            def ackedAll(self, seqs):
                # Whether the connection had already failed.
                self.calls.append(("ackedAll", list(seqs), proto._closing))

        stub = BatchingSender()
        proto = SenderFactory(stub, clock=Clock()).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(framed(wire.Welcome(maxMessageBytes=1000)))
        del stub.calls[:]
        proto.dataReceived(framed(wire.Ack(0)) + struct.pack("!I", 2**31) + bytes(8))
        self.assertEqual(stub.calls, [("ackedAll", [0], False)])
        self.assertTrue(transport.disconnecting)

    def test_answersBeforeWelcome(self):
        """
        ACK, REJECT or RESULT before WELCOME is a protocol error, not
        relayed.
        """
        for message in (wire.Ack(0), wire.Reject(0), wire.Result(0)):
            proto, transport, stub, _ = sender()
            transport.clear()
            proto.dataReceived(framed(message))
            self.assertEqual(stub.calls, [])
            self.assertEqual([m.code for m in written(transport)], [wire.ERR_PROTOCOL])
            self.assertTrue(transport.disconnecting)

    def test_errorBeforeWelcome(self):
        """
        ERROR before WELCOME means the server refused: the sender is told
        C{refused} and the connection closes without an answer.
        """
        proto, transport, stub, _ = sender()
        transport.clear()
        error = wire.Error(wire.ERR_BAD_NAME, "bad name")
        proto.dataReceived(framed(error))
        self.assertEqual(stub.calls, [("refused", error)])
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_errorAfterWelcome(self):
        """
        ERROR after WELCOME tells the sender C{failed} and closes.
        """
        proto, transport, stub = self.welcomed()
        error = wire.Error(wire.ERR_REPLACED, "replaced")
        proto.dataReceived(framed(error) + framed(wire.Ack(3)))
        self.assertEqual(stub.calls, [("failed", error)])
        self.assertTrue(transport.disconnecting)

    def test_ping(self):
        """
        PING is answered by PONG with the same token, before and after
        WELCOME.
        """
        proto, transport, _, _ = sender()
        transport.clear()
        proto.dataReceived(framed(wire.Ping(5)))
        proto.dataReceived(framed(wire.Welcome()) + framed(wire.Ping(6)))
        self.assertEqual(written(transport), [wire.Pong(5), wire.Pong(6)])

    def test_unexpected(self):
        """
        A second WELCOME, or a message only a sender sends, is answered with
        ERROR 4 and a disconnect.
        """
        for message in (
            wire.Welcome(),
            wire.Hello("x"),
            wire.Frame(0, TINY_JPEG),
            wire.Bye(),
            wire.Auth(b"n" * 32, b"d" * 32),
        ):
            proto, transport, stub = self.welcomed()
            proto.dataReceived(framed(message))
            self.assertEqual(stub.calls, [])
            self.assertEqual([m.code for m in written(transport)], [wire.ERR_PROTOCOL])
            self.assertTrue(transport.disconnecting)

    def test_overLimitFromServer(self):
        """
        The sender applies its own maximum message size to the server.
        """
        proto, transport, stub, _ = sender(maxMessageBytes=64)
        transport.clear()
        proto.dataReceived(struct.pack("!I", 65))
        self.assertEqual([m.code for m in written(transport)], [wire.ERR_TOO_LARGE])
        self.assertTrue(transport.disconnecting)

    def test_sendFrameAndGoodbye(self):
        """
        C{sendFrame} and C{sayGoodbye} write FRAME and BYE.
        """
        proto, transport, _ = self.welcomed()
        frame = wire.Frame(0, TINY_JPEG, 1.0, 2.0)
        proto.sendFrame(frame)
        proto.sayGoodbye("end")
        self.assertEqual(written(transport), [frame, wire.Bye("end")])

    def test_connectionLost(self):
        """
        Losing the connection tells the sender and marks the pressure
        producer paused.
        """
        proto, _, stub = self.welcomed()
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(stub.calls, [("disconnected",)])
        self.assertTrue(proto.pressure.paused)


class SenderStateTests(SynchronousTestCase):
    """
    L{FrameSenderProtocol}'s handshake states (awaiting WELCOME, answering a
    CHALLENGE, streaming, closed) each answer every server message as
    PROTOCOL.md says.
    """

    def sender(self, token: str | None = None, before=()):
        proto, transport, stub, factory = sender(
            token=None if token is None else token.encode()
        )
        for message in before:
            proto.dataReceived(framed(message))
        transport.clear()
        del stub.calls[:]
        return proto, transport, stub, factory

    def test_unexpectedNamesTheState(self):
        """
        A message out of place gets ERROR 4 whose reason says where the
        connection was (ACK, REJECT, RESULT or a sender's message before
        WELCOME, also while answering a CHALLENGE; a second CHALLENGE after
        AUTH; WELCOME or CHALLENGE after the handshake), logged with the
        peer, and nothing reaches the sender.
        """
        challenge = wire.Challenge(b"s" * 32)
        auth = wire.Auth(b"c" * 32, b"d" * 32)
        welcome = wire.Welcome()
        cases = [
            (None, [], wire.Ack(0), "unexpected ACK before WELCOME"),
            (None, [], wire.Reject(0), "unexpected REJECT before WELCOME"),
            (None, [], wire.Result(0), "unexpected RESULT before WELCOME"),
            (None, [], HELLO, "unexpected HELLO before WELCOME"),
            (None, [], wire.Frame(0, TINY_JPEG), "unexpected FRAME before WELCOME"),
            (None, [], wire.Bye(), "unexpected BYE before WELCOME"),
            (None, [], auth, "unexpected AUTH before WELCOME"),
            (TOKEN, [challenge], wire.Ack(0), "unexpected ACK before WELCOME"),
            (TOKEN, [challenge], auth, "unexpected AUTH before WELCOME"),
            (TOKEN, [challenge], challenge, "unexpected CHALLENGE after AUTH"),
            (None, [welcome], welcome, "unexpected WELCOME after the handshake"),
            (None, [welcome], challenge, "unexpected CHALLENGE after the handshake"),
            (None, [welcome], wire.Bye(), "unexpected BYE after the handshake"),
        ]
        for token, before, message, reason in cases:
            proto, transport, stub, factory = self.sender(token, before)
            with capturedLogs() as events:
                proto.dataReceived(framed(message) + framed(wire.Ack(1)))
            self.assertEqual(
                written(transport), [wire.Error(wire.ERR_PROTOCOL, reason)], reason
            )
            self.assertTrue(transport.disconnecting)
            self.assertEqual(stub.calls, [])
            self.assertTrue(factory.continueTrying)
            [event] = [e for e in events if e["log_format"].endswith("; disconnecting")]
            self.assertEqual(
                (event["peer"], event["kind"], event["when"]),
                (proto.peer, reason.split()[1], reason.split(" ", 2)[2]),
            )

    def test_challengeThenWelcome(self):
        """
        With a token, HELLO carries CAP_AUTH; a CHALLENGE is answered by an
        AUTH whose digest proves the token for the HELLO's name, and the
        WELCOME after it connects the sender, after which ACKs are relayed.
        """
        proto, transport, stub, _ = sender(token=TOKEN.encode())
        [hello] = written(transport)
        self.assertEqual(
            hello,
            wire.Hello(HELLO.name, HELLO.capabilities | wire.CAP_AUTH, HELLO.session),
        )
        transport.clear()
        serverNonce = b"s" * 32
        proto.dataReceived(framed(wire.Challenge(serverNonce)))
        [auth] = written(transport)
        self.assertIsInstance(auth, wire.Auth)
        self.assertEqual(
            auth.digest,
            computeDigest(TOKEN.encode(), serverNonce, auth.nonce, hello.name),
        )
        self.assertEqual(stub.calls, [])
        self.assertIsNone(proto.welcomed)
        welcome = wire.Welcome()
        proto.dataReceived(framed(welcome) + framed(wire.Ack(0)))
        self.assertEqual(stub.calls, [("connected", welcome), ("acked", 0)])
        self.assertEqual(proto.welcomed, welcome)
        self.assertFalse(transport.disconnecting)

    def test_challengeWithoutToken(self):
        """
        A CHALLENGE to a sender without a token is answered by ERROR 6 (the
        sender is told C{refused} with it) and the factory stops trying:
        no retry can produce a token.
        """
        proto, transport, stub, factory = self.sender()
        proto.dataReceived(framed(wire.Challenge(b"s" * 32)) + framed(wire.Welcome()))
        error = wire.Error(wire.ERR_AUTH, wire.NO_TOKEN_REASON)
        self.assertEqual(written(transport), [error])
        self.assertEqual(stub.calls, [("refused", error)])
        self.assertTrue(transport.disconnecting)
        self.assertFalse(factory.continueTrying)

    def test_errorBeforeWelcomeIsRefusal(self):
        """
        ERROR before WELCOME, also while answering a CHALLENGE, is a
        refusal: logged, relayed as C{refused}, answered by nothing, and
        only ERROR 6 stops the factory from reconnecting.
        """
        challenge = wire.Challenge(b"s" * 32)
        for token, before in [(None, []), (TOKEN, [challenge])]:
            for code, retries in [(wire.ERR_AUTH, False), (wire.ERR_BUSY, True)]:
                proto, transport, stub, factory = self.sender(token, before)
                error = wire.Error(code, "no")
                with capturedLogs() as events:
                    proto.dataReceived(framed(error) + framed(wire.Welcome()))
                self.assertEqual(stub.calls, [("refused", error)])
                self.assertEqual(transport.value(), b"")
                self.assertTrue(transport.disconnecting)
                self.assertEqual(factory.continueTrying, retries)
                self.assertEqual(
                    [(e["reason"], e["code"]) for e in events if "code" in e],
                    [("no", code)],
                )

    def test_errorAfterWelcomeIsFailure(self):
        """
        ERROR after WELCOME, even ERROR 6, is a failure of the stream: the
        sender is told C{failed}, and the factory's retrying is left to it.
        """
        proto, transport, stub, factory = self.sender(before=[wire.Welcome()])
        error = wire.Error(wire.ERR_AUTH, "revoked")
        proto.dataReceived(framed(error))
        self.assertEqual(stub.calls, [("failed", error)])
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertTrue(factory.continueTrying)

    def test_goodbyeBeforeWelcome(self):
        """
        Saying goodbye before WELCOME closes the connection without a BYE,
        which PROTOCOL.md does not allow before WELCOME; once closed,
        nothing more is said.
        """
        proto, transport, stub, _ = self.sender()
        proto.sayGoodbye("stopping")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        proto.sayGoodbye("again")
        proto.messageReceived(wire.Welcome())
        self.assertEqual(transport.value(), b"")
        self.assertEqual(stub.calls, [])

    def test_closedIgnoresEverything(self):
        """
        After the connection closed (here: refused), late messages, a
        timeout and a goodbye change nothing and write nothing; losing the
        connection still tells the sender.
        """
        proto, transport, stub, _ = self.sender()
        proto.dataReceived(framed(wire.Error(wire.ERR_BAD_NAME, "bad")))
        transport.clear()
        del stub.calls[:]
        for message in (wire.Welcome(), wire.Ack(0), wire.Error(wire.ERR_BUSY, "x")):
            proto.messageReceived(message)
        with capturedLogs() as events:
            proto.timedOut(5)
        proto.sayGoodbye()
        self.assertEqual([e["what"] for e in events if "what" in e], ["handshake"])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(stub.calls, [])
        self.assertIsNone(proto.welcomed)
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(stub.calls, [("disconnected",)])

    def test_ackReadWithoutDecoding(self):
        """
        Once streaming, an ACK's seq is read straight from its bytes: no
        message is decoded for it.
        """
        proto, _, stub, _ = self.sender()
        proto.dataReceived(framed(wire.Welcome()))
        decoded = []
        self.patch(wire, "decodeMessage", lambda data: decoded.append(data))
        proto.dataReceived(framed(wire.Ack(11)) + framed(wire.Ack(12)))
        self.assertEqual(decoded, [])
        self.assertEqual(
            [c for c in stub.calls if c[0] == "acked"], [("acked", 11), ("acked", 12)]
        )

    def test_acksBypassTheMachine(self):
        """
        Once streaming, an ACK goes to the sender without passing through
        the state machine's dispatch (the per-frame path); before WELCOME
        it goes through the machine, which calls it out of place.
        """
        proto, _, stub, _ = self.sender()
        self.assertEqual(proto._onAck, proto._ackBeforeWelcome)
        proto.dataReceived(framed(wire.Welcome()))
        self.assertEqual(proto._onAck, stub.acked)


class AnswerServerTests(SynchronousTestCase):
    """
    L{wire.answerServer}, the decisions before WELCOME that the sender's
    machine and the blocking client share.
    """

    hello = wire.Hello("cam-1", wire.CAP_AUTH)

    def test_outcomes(self):
        """
        WELCOME ends the handshake; ERROR is the server's refusal; PING is
        answered by PONG and PONG by nothing; anything else is a violation
        before WELCOME.
        """
        welcome = wire.Welcome()
        error = wire.Error(wire.ERR_BAD_NAME, "bad")
        answer = lambda m: wire.answerServer(self.hello, m, None)  # noqa: E731
        self.assertEqual(answer(welcome), wire.Welcomed(welcome))
        self.assertEqual(answer(error), wire.Refusal(error, ours=False))
        self.assertEqual(answer(wire.Ping(3)), wire.Answer(wire.Pong(3)))
        self.assertEqual(answer(wire.Pong(3)), wire.Answer(None))
        violation = answer(wire.Reject(1, "x"))
        self.assertEqual(violation, wire.Violation(wire.Reject(1, "x"), "before WELCOME"))
        self.assertEqual(violation.reason, "unexpected REJECT before WELCOME")

    def test_challenge(self):
        """
        A CHALLENGE is answered by an AUTH with a fresh nonce when there is
        a token, refused by this end (ERROR 6, with the given reason) when
        there is none, and out of place once answered.
        """
        challenge = wire.Challenge(b"s" * 32)
        first = wire.answerServer(self.hello, challenge, b"t")
        second = wire.answerServer(self.hello, challenge, b"t")
        self.assertNotEqual(first.message.nonce, second.message.nonce)
        self.assertEqual(
            first.message.digest,
            computeDigest(b"t", challenge.nonce, first.message.nonce, "cam-1"),
        )
        self.assertEqual(
            wire.answerServer(self.hello, challenge, None, noToken="none"),
            wire.Refusal(wire.Error(wire.ERR_AUTH, "none"), ours=True),
        )
        self.assertEqual(
            wire.answerServer(self.hello, challenge, b"t", answered=True).reason,
            "unexpected CHALLENGE after AUTH",
        )


class StreamingSender(StubSender):
    """
    A stub sender that sends C{count} frames once welcomed and says goodbye
    once all are acknowledged.
    """

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def connected(self, protocol, welcome):
        super().connected(protocol, welcome)
        self.protocol = protocol
        for seq in range(self.count):
            protocol.sendFrame(wire.Frame(seq, TINY_JPEG, float(seq), float(seq)))

    def acked(self, seq):
        super().acked(seq)
        if seq == self.count - 1:
            self.protocol.sayGoodbye("finished")


class BothEndsTests(SynchronousTestCase):
    """
    The two protocols talk to each other over an in-memory connection.
    """

    def test_handshakeFramesAcks(self):
        """
        A sender connects, is welcomed, sends frames that reach the
        registry, receives an ACK for each, says BYE and both ends close.
        """
        registry = StubRegistry()
        clock = Clock()
        serverFactory = ReceiverFactory(registry, clock, pipeline=registry)
        stub = StreamingSender(3)
        clientFactory = SenderFactory(stub, clock=clock)
        client, server, pump = iosim.connectedServerAndClient(
            lambda: serverFactory.buildProtocol(None),
            lambda: clientFactory.buildProtocol(None),
            clock=clock,
        )
        pump.flush()
        self.assertEqual(registry.attached, [("cam-1", server)])
        self.assertEqual([f.seq for _, f, _ in registry.frames], [0, 1, 2])
        self.assertEqual(
            stub.calls,
            [
                ("connected", wire.Welcome()),
                ("acked", 0),
                ("acked", 1),
                ("acked", 2),
                ("disconnected",),
            ],
        )
        self.assertEqual(registry.detached, [("cam-1", server)])


class _TcpTransport(StringTransport):
    """
    A L{StringTransport} with C{ITCPTransport.setTcpNoDelay}, recording it.
    """

    noDelay = None

    def setTcpNoDelay(self, enabled):
        self.noDelay = enabled


class _UnixTransport(StringTransport):
    def setTcpNoDelay(self, enabled):
        raise OSError(95, "Operation not supported")


class DrainingSender(StubSender):
    def drained(self):
        self.calls.append(("drained",))


class TransportTuningTests(SynchronousTestCase):
    """
    Both protocols turn off Nagle's algorithm, and the sending protocol
    tells its sender when a paused transport drains.
    """

    def test_noDelayBothEnds(self):
        """
        Connecting sets C{TCP_NODELAY} on a TCP transport, at both ends.
        """
        for factory in (
            ReceiverFactory(StubRegistry(), Clock(), pipeline=StubRegistry()),
            SenderFactory(StubSender(), clock=Clock()),
        ):
            transport = _TcpTransport()
            factory.buildProtocol(None).makeConnection(transport)
            self.assertIs(transport.noDelay, True)

    def test_receiverReadsLargeChunks(self):
        """
        The receiving protocol raises its TCP transport's read size to
        C{READ_BYTES}, so several frames are read per reactor turn; the
        sending protocol leaves its transport's (write) threshold alone.
        """
        from imageproto.protocol.framing import READ_BYTES

        for factory, expected in (
            (ReceiverFactory(StubRegistry(), Clock(), pipeline=StubRegistry()), READ_BYTES),
            (SenderFactory(StubSender(), clock=Clock()), 65536),
        ):
            transport = _TcpTransport()
            transport.bufferSize = 65536
            factory.buildProtocol(None).makeConnection(transport)
            self.assertEqual(transport.bufferSize, expected)

    def test_welcomedSenderReadInto(self):
        """
        Once it welcomes a sender, the receiving protocol has a plain TCP
        connection read into the shared buffer (L{readInto}), and not
        before.
        """
        from imageproto.protocol import receiving

        calls = []
        self.patch(receiving, "readInto", calls.append)
        proto, transport, registry = receiver()
        self.assertEqual(calls, [])
        proto.dataReceived(framed(HELLO))
        self.assertIsInstance(written(transport)[0], wire.Welcome)
        self.assertEqual(calls, [transport])

    def test_acceptedAtOnceHoldsNothing(self):
        """
        A frame the registry accepts at once is acknowledged before
        C{dataReceived} returns and leaves nothing counted against the
        peer's backlog.
        """
        proto, transport, registry = receiver()
        jpeg = b"\xff\xd8\xff\x00\xff\xd9"
        proto.dataReceived(framed(HELLO) + framed(wire.Frame(0, jpeg, 1.0, 2.0)))
        self.assertEqual(written(transport)[-1], wire.Ack(0))
        self.assertEqual(proto.backlog.pending, 0)

    def test_noDelayUnsupported(self):
        """
        A transport whose socket refuses C{TCP_NODELAY} (a UNIX socket)
        still gets a working connection.
        """
        proto = ReceiverFactory(StubRegistry(), Clock(), pipeline=StubRegistry()).buildProtocol(None)
        transport = _UnixTransport()
        proto.makeConnection(transport)
        self.assertIsNotNone(transport.producer)
        proto.dataReceived(framed(HELLO))
        self.assertEqual(written(transport)[0], wire.Welcome())

    def test_drainedWakesSender(self):
        """
        When the transport resumes the paused pressure producer, the
        sender's C{drained} is called, once per resume.
        """
        stub = DrainingSender()
        proto = SenderFactory(stub, clock=Clock()).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        transport.producer.pauseProducing()
        self.assertEqual(stub.calls, [])
        transport.producer.resumeProducing()
        self.assertFalse(proto.pressure.paused)
        self.assertEqual(stub.calls, [("drained",)])


class _Collect(Protocol):
    """
    Gathers everything read, firing C{done} once C{expected} bytes came.
    """

    def __init__(self, expected: int, done: Deferred) -> None:
        self.expected = expected
        self.done = done
        self.received = bytearray()

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.received))


class DirectSendTests(TestCase):
    """
    The sending protocol gives a FRAME's parts straight to the socket of a
    plain TCP transport holding nothing, and queues the rest in the
    transport; the peer reads exactly the encoded FRAMEs, in order.
    """

    def _connect(self, expected: int):
        from twisted.internet import reactor
        from twisted.internet.protocol import ClientFactory, ServerFactory

        done = Deferred()
        server = ServerFactory.forProtocol(lambda: _Collect(expected, done))
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        connected = Deferred()

        class Client(Protocol):
            def connectionMade(self):
                connected.callback(self.transport)

        factory = ClientFactory.forProtocol(Client)
        connector = reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
        self.addCleanup(connector.disconnect)
        return connected, done

    def test_largeFramesPartlySentThenQueued(self):
        """
        Frames larger than the kernel takes at once: the first goes to the
        socket, what it did not take is queued, later frames queue behind
        it (C{_sendNow} declines while the transport holds data), and the
        peer gets every byte in order.
        """
        from imageproto.protocol.direct import sendNow as _sendNow

        jpegs = [bytes([i]) * (16 * 1024 * 1024) for i in range(3)]
        frames = [wire.Frame(i, jpeg, 1.0, 2.0) for i, jpeg in enumerate(jpegs)]
        expected = b"".join(wire.encodeFramed(f) for f in frames)
        connected, done = self._connect(len(expected))

        def send(transport):
            results = [_sendNow(transport, wire.framedFrameParts(f)) for f in frames[:1]]
            for f in frames[1:]:
                parts = wire.framedFrameParts(f)
                if _sendNow(transport, parts):
                    results.append(True)
                else:
                    results.append(False)
                    transport.write(b"".join(parts))
            self.assertEqual(results, [True, False, False])
            return done

        connected.addCallback(send)
        connected.addCallback(lambda received: self.assertEqual(received, expected))
        return connected

    def test_readIntoDeliversEveryByte(self):
        """
        A server connection made to read with L{readInto} hands its
        protocol each read as a view of the shared buffer: 8 MiB written in
        pieces arrive whole and in order across many reads.
        """
        from twisted.internet import reactor
        from twisted.internet.protocol import ClientFactory, ServerFactory

        from imageproto.protocol.direct import readInto

        payload = bytes(range(256)) * (8 * 4096)
        done = Deferred()
        installed = []

        class Server(_Collect):
            def connectionMade(self):
                installed.append(readInto(self.transport))

        port = reactor.listenTCP(
            0, ServerFactory.forProtocol(lambda: Server(len(payload), done)), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)

        class Client(Protocol):
            def connectionMade(self):
                for i in range(0, len(payload), 100_000):
                    self.transport.write(payload[i : i + 100_000])

        connector = reactor.connectTCP(
            "127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Client)
        )
        self.addCleanup(connector.disconnect)

        def check(received):
            self.assertEqual(installed, [True])
            self.assertEqual(received, payload)

        return done.addCallback(check)

    def test_readIntoOutcomes(self):
        """
        L{readInto}'s read says what Twisted's does: nothing to read yet is
        no event, an error is a lost connection, end of file a closed one;
        it declines transports that are not plain TCP.
        """
        import errno

        from twisted.internet import main

        from imageproto.protocol.direct import _doRead, readInto

        class Socket:
            def __init__(self, outcome):
                self.outcome = outcome

            def recv_into(self, view):
                if isinstance(self.outcome, Exception):
                    raise self.outcome
                view[: len(self.outcome)] = self.outcome
                return len(self.outcome)

        class Tcp:
            def __init__(self, outcome):
                self.socket = Socket(outcome)
                self.protocol = self
                self.reads = []

            def dataReceived(self, data):
                self.reads.append(bytes(data))

        self.assertIsNone(_doRead(Tcp(BlockingIOError(errno.EWOULDBLOCK, "later"))))
        self.assertIs(_doRead(Tcp(ConnectionResetError(errno.ECONNRESET, "reset"))), main.CONNECTION_LOST)
        self.assertIs(_doRead(Tcp(b"")), main.CONNECTION_DONE)
        tcp = Tcp(b"abc")
        self.assertIsNone(_doRead(tcp))
        self.assertEqual(tcp.reads, [b"abc"])
        self.assertFalse(readInto(StringTransport()))

    def test_plainTcpUnwrapped(self):
        """
        C{_plainTcp} finds the TCP connection under pass-through wrappers,
        and none under TLS or in a transport that is not TCP.
        """
        from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        from imageproto.protocol.direct import plainTcp as _plainTcp

        connected, done = self._connect(0)

        def check(transport):
            wrapper = ProtocolWrapper(WrappingFactory(None), None)
            wrapper.transport = transport
            self.assertIs(_plainTcp(transport), transport)
            self.assertIs(_plainTcp(wrapper), transport)
            tls = TLSMemoryBIOProtocol(None, None)
            tls.transport = transport
            self.assertIsNone(_plainTcp(tls))
            self.assertIsNone(_plainTcp(StringTransport()))

        return connected.addCallback(check)
