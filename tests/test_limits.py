# -*- test-case-name: tests.test_limits -*-
"""
Tests for L{imageproto.protocol.limits} and the limits the protocols apply with it:
connection count, handshake and idle timeouts, heartbeats, and the per-peer
buffer cap.  Fake clocks and C{StringTransport}s only.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from tests.helpers import StubRegistry
from imageproto.protocol.factories import ReceiverFactory, SenderFactory
from imageproto.protocol.limits import (
    ABORT_GRACE,
    PeerBuffer,
    ReadGate,
    Watchdog,
    senderIdleTimeout,
)

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 100 + b"\xff\xd9"


def framed(message) -> bytes:
    data = wire.encodeMessage(message)
    return len(data).to_bytes(4, "big") + data


def messages(transport: StringTransport) -> list:
    """
    Decode and clear everything written to C{transport}.
    """
    data = transport.value()
    transport.clear()
    out = []
    while data:
        size = int.from_bytes(data[:4], "big")
        out.append(wire.decodeMessage(data[4 : 4 + size]))
        data = data[4 + size :]
    return out


def FakeStreams():
    """
    A registry and pipeline stand-in whose frames stay pending until the
    test fires the Deferreds in its C{pending}.
    """
    return StubRegistry(hold=True)


class FakeSender:
    """
    A FrameSender stand-in recording what the protocol tells it.
    """

    def __init__(self, name: str = "cam-1") -> None:
        self.name = name
        self.events = []

    def hello(self) -> wire.Hello:
        return wire.Hello(self.name, wire.CAP_LIVE, 7)

    def __getattr__(self, name):
        if name in ("connected", "acked", "rejected", "resultReceived",
                    "refused", "failed", "disconnected", "fail"):
            return lambda *args: self.events.append((name,) + args)
        raise AttributeError(name)


def receiverFactory(clock: Clock, **settings) -> ReceiverFactory:
    streams = FakeStreams()
    factory = ReceiverFactory(
        streams, clock, heartbeat=settings.pop("heartbeat", 0), pipeline=streams
    )
    for key, value in settings.items():
        setattr(factory, key, value)
    return factory


def connect(factory):
    """
    A protocol from C{factory} on a fresh StringTransport.
    """
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


class PureLogicTests(SynchronousTestCase):
    def test_watchdogDeadline(self) -> None:
        """
        The deadline fires C{timeout} seconds after the last activity, once.
        """
        clock = Clock()
        fired = []
        dog = Watchdog(clock, fired.append, lambda token: None)
        dog.expect(5)
        clock.advance(4)
        dog.activity()
        clock.advance(4)
        self.assertEqual(fired, [])
        clock.advance(1)
        self.assertEqual(fired, [5])
        clock.advance(10)
        self.assertEqual(fired, [5])

    def test_watchdogSuspend(self) -> None:
        """
        A suspended deadline does not fire; unsuspending restarts it from
        that moment.
        """
        clock = Clock()
        fired = []
        dog = Watchdog(clock, fired.append, lambda token: None)
        dog.expect(5)
        dog.suspend()
        clock.advance(60)
        self.assertEqual(fired, [])
        dog.unsuspend()
        clock.advance(4.9)
        self.assertEqual(fired, [])
        clock.advance(0.1)
        self.assertEqual(fired, [5])

    def test_watchdogHeartbeat(self) -> None:
        """
        The heartbeat sends a fresh token every interval until stopped.
        """
        clock = Clock()
        pings = []
        dog = Watchdog(clock, lambda s: None, pings.append)
        dog.heartbeat(2)
        clock.pump([2, 2, 2])
        self.assertEqual(pings, [1, 2, 3])
        dog.stop()
        clock.advance(10)
        self.assertEqual(pings, [1, 2, 3])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_gate(self) -> None:
        """
        Reading pauses with the first reason and resumes with the last.
        """
        calls = []
        gate = ReadGate(lambda: calls.append("pause"), lambda: calls.append("resume"))
        self.assertTrue(gate.hold("a"))
        self.assertFalse(gate.hold("b"))
        self.assertFalse(gate.release("a"))
        self.assertFalse(gate.release("a"))
        self.assertTrue(gate.release("b"))
        self.assertEqual(calls, ["pause", "resume"])

    def test_peerBuffer(self) -> None:
        """
        The buffer is over its cap only while more than C{cap} bytes are held,
        and remembers its peak.
        """
        buf = PeerBuffer(cap=100)
        buf.add(60)
        buf.add(60)
        self.assertTrue(buf.over)
        buf.remove(60)
        self.assertFalse(buf.over)
        self.assertEqual((buf.pending, buf.peak), (60, 120))

    def test_senderIdleTimeout(self) -> None:
        """
        By default a sender waits three heartbeats; 0 turns the timeout off;
        an explicit value wins.
        """
        self.assertEqual(senderIdleTimeout(None, 2), 6.0)
        self.assertIsNone(senderIdleTimeout(None, 0))
        self.assertIsNone(senderIdleTimeout(0, 2))
        self.assertEqual(senderIdleTimeout(4.5, 2), 4.5)


class ReceiverLimitTests(SynchronousTestCase):
    def test_maxConnections(self) -> None:
        """
        A connection over C{maxConnections} gets ERROR 10 and is closed, with
        a warning naming the option; closing one makes room.
        """
        clock = Clock()
        factory = receiverFactory(clock, maxConnections=2)
        first, _ = connect(factory)
        connect(factory)
        with capturedLogs() as events:
            third, transport = connect(factory)
        [error] = messages(transport)
        self.assertEqual(error.code, wire.ERR_BUSY)
        self.assertTrue(transport.disconnecting)
        self.assertIn("--max-connections", events[-1]["log_format"])
        third.connectionLost(None)
        first.connectionLost(None)
        self.assertEqual(len(factory.peers), 1)
        fourth, transport = connect(factory)
        self.assertEqual(transport.value(), b"")
        self.assertIn(fourth, factory.peers)

    def test_handshakeTimeout(self) -> None:
        """
        No HELLO within C{handshakeTimeout} gets ERROR 7; a peer that does
        not read it is aborted after the grace period.
        """
        clock = Clock()
        proto, transport = connect(receiverFactory(clock, handshakeTimeout=3))
        clock.advance(2.9)
        self.assertEqual(transport.value(), b"")
        with capturedLogs() as events:
            clock.advance(0.1)
        [error] = messages(transport)
        self.assertEqual(error, wire.Error(wire.ERR_TIMEOUT, "no handshake within 3 s"))
        self.assertIn("no {what} within {seconds} s", events[0]["log_format"])
        self.assertFalse(transport.disconnected)
        clock.advance(ABORT_GRACE)
        self.assertTrue(transport.disconnected)

    def test_slowHelloByteByByte(self) -> None:
        """
        The handshake deadline counts from the connection, not the last
        byte: a HELLO dribbled one byte a second is cut off at
        C{handshakeTimeout}.
        """
        clock = Clock()
        proto, transport = connect(receiverFactory(clock, handshakeTimeout=3))
        for byte in framed(wire.Hello("cam-1"))[:5]:
            clock.advance(1)
            proto.dataReceived(bytes([byte]))
        [error] = messages(transport)
        self.assertEqual(error.code, wire.ERR_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_watchdogActivityDuringHandshake(self) -> None:
        """
        A HELLO that arrives within the handshake deadline is welcomed.
        """
        clock = Clock()
        proto, transport = connect(receiverFactory(clock, handshakeTimeout=3))
        clock.advance(2.5)
        proto.dataReceived(framed(wire.Hello("cam-1")))
        clock.advance(10)
        [welcome] = messages(transport)
        self.assertIsInstance(welcome, wire.Welcome)

    def test_idleTimeoutAndHeartbeat(self) -> None:
        """
        After WELCOME the server pings every heartbeat; a peer that answers
        stays; one that falls silent for C{idleTimeout} gets ERROR 7.
        """
        clock = Clock()
        factory = receiverFactory(clock, heartbeat=2, idleTimeout=6)
        proto, transport = connect(factory)
        proto.dataReceived(framed(wire.Hello("cam-1")))
        self.assertEqual(messages(transport)[0].heartbeat, 2)
        for _ in range(5):
            clock.advance(2)
            [ping] = messages(transport)
            proto.dataReceived(framed(wire.Pong(ping.token)))
        self.assertFalse(transport.disconnecting)
        clock.pump([2, 2, 2])
        out = messages(transport)
        self.assertEqual([type(m) for m in out], [wire.Ping, wire.Ping, wire.Error])
        self.assertEqual(out[-1].code, wire.ERR_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_peerBufferPausesReading(self) -> None:
        """
        Over C{maxPeerBuffer} bytes of unsettled frames, the server stops
        reading from that peer (and suspends its idle deadline); once storage
        catches up it reads again, including frames already buffered.
        """
        clock = Clock()
        factory = receiverFactory(clock, maxPeerBuffer=len(JPEG) * 2, idleTimeout=5)
        proto, transport = connect(factory)
        proto.dataReceived(framed(wire.Hello("cam-1")))
        messages(transport)
        with capturedLogs() as events:
            proto.dataReceived(b"".join(framed(wire.Frame(i, JPEG)) for i in range(5)))
        self.assertEqual(len(factory.streams.pending), 3)
        self.assertEqual(transport.producerState, "paused")
        self.assertIn("--max-peer-buffer", events[-1]["log_format"])
        clock.advance(60)
        self.assertFalse(transport.disconnecting)
        for d in list(factory.streams.pending):
            d.callback(None)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(factory.streams.pending), 5)
        acks = [m.seq for m in messages(transport)]
        self.assertEqual(acks, [0, 1, 2])

    def test_sendBufferFullPausesReading(self) -> None:
        """
        When the transport says our send buffer to the peer is full, reading
        from that peer pauses until it drains.
        """
        clock = Clock()
        proto, transport = connect(receiverFactory(clock))
        transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(proto.paused)
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(proto.paused)


class SenderLimitTests(SynchronousTestCase):
    def senderFactory(self, clock, **settings):
        factory = SenderFactory(FakeSender(), clock)
        for key, value in settings.items():
            setattr(factory, key, value)
        return factory

    def test_deadServerDropped(self) -> None:
        """
        A sender that hears nothing from the server for three of its
        heartbeats sends ERROR 7 and closes, so the factory reconnects.
        """
        clock = Clock()
        proto, transport = connect(self.senderFactory(clock))
        messages(transport)
        proto.dataReceived(framed(wire.Welcome(heartbeat=2)))
        clock.advance(5)
        proto.dataReceived(framed(wire.Ping(1)))
        clock.advance(5.9)
        self.assertEqual([type(m) for m in messages(transport)], [wire.Pong])
        clock.advance(0.1)
        [error] = messages(transport)
        self.assertEqual(error.code, wire.ERR_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_senderHandshakeTimeout(self) -> None:
        """
        A server that never answers HELLO is dropped after
        C{handshakeTimeout}.
        """
        clock = Clock()
        proto, transport = connect(self.senderFactory(clock, handshakeTimeout=4))
        messages(transport)
        clock.advance(4)
        [error] = messages(transport)
        self.assertEqual(error.code, wire.ERR_TIMEOUT)

    def test_ownHeartbeat(self) -> None:
        """
        When the server announces no heartbeat, a sender with its own pings
        the server and applies the idle timeout to the answers.
        """
        clock = Clock()
        proto, transport = connect(self.senderFactory(clock, heartbeat=1))
        messages(transport)
        proto.dataReceived(framed(wire.Welcome(heartbeat=0)))
        clock.advance(1)
        [ping] = messages(transport)
        self.assertIsInstance(ping, wire.Ping)
        proto.dataReceived(framed(wire.Pong(ping.token)))
        clock.pump([1, 1, 1])
        self.assertEqual(
            [type(m) for m in messages(transport)], [wire.Ping, wire.Ping, wire.Error]
        )

    def test_noHeartbeatNoTimeout(self) -> None:
        """
        With no heartbeat on either end there is no idle deadline.
        """
        clock = Clock()
        proto, transport = connect(self.senderFactory(clock))
        proto.dataReceived(framed(wire.Welcome(heartbeat=0)))
        messages(transport)
        clock.advance(3600)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
