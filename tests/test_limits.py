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
from tests.helpers import FakeSender, FakeStreams, framed, takeMessages
from imageproto.protocol.factories import ReceiverFactory, SenderFactory
from imageproto.protocol.limits import (
    ABORT_GRACE,
    HANDSHAKE_MAX_BYTES,
    BufferBudget,
    PeerBuffer,
    ReadGate,
    Watchdog,
    senderIdleTimeout,
)

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 100 + b"\xff\xd9"


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


class _Holder:
    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    def budgetGranted(self, size: int) -> None:
        self.log.append((self.name, size))


class BufferBudgetTests(SynchronousTestCase):
    def test_grantsWithinCap(self) -> None:
        """
        Requests are granted at once while they fit under the cap.
        """
        budget = BufferBudget(100)
        self.assertTrue(budget.request(_Holder("a", []), 60))
        self.assertTrue(budget.request(_Holder("b", []), 40))
        self.assertEqual((budget.used, budget.peak), (100, 100))

    def test_oneAlwaysFits(self) -> None:
        """
        With nothing reserved, a request larger than the cap is granted, so
        some connection always makes progress.
        """
        budget = BufferBudget(10)
        self.assertTrue(budget.request(_Holder("a", []), 50))

    def test_firstComeFirstServed(self) -> None:
        """
        Requests that do not fit wait in order of arrival; a later small
        request does not overtake an earlier large one, and releases grant
        the queue from its head.
        """
        granted = []
        budget = BufferBudget(100)
        budget.request(_Holder("a", granted), 90)
        self.assertFalse(budget.request(_Holder("big", granted), 80))
        self.assertFalse(budget.request(_Holder("small", granted), 5))
        self.assertEqual(budget.waiting, 2)
        budget.release(90)
        self.assertEqual(granted, [("big", 80), ("small", 5)])
        self.assertEqual(budget.used, 85)

    def test_cancel(self) -> None:
        """
        A cancelled request is never granted, and the ones behind it move
        up.
        """
        granted = []
        budget = BufferBudget(100)
        budget.request(_Holder("a", granted), 90)
        gone = _Holder("gone", granted)
        budget.request(gone, 80)
        budget.request(_Holder("next", granted), 10)
        budget.cancel(gone)
        self.assertEqual(granted, [("next", 10)])


def welcomed(factory, name: str):
    proto, transport = connect(factory)
    proto.dataReceived(framed(wire.Hello(name, 0, 1)))
    transport.clear()
    return proto, transport


class ReceiverLimitTests(SynchronousTestCase):
    def test_largeMessageBeforeHandshake(self) -> None:
        """
        Before WELCOME a peer may announce only a handshake-sized message:
        announcing a larger one (well under C{--max-frame-bytes}) gets
        ERROR 5, a warning and disconnection, and nothing is kept of what it
        sent.
        """
        clock = Clock()
        factory = receiverFactory(clock)
        proto, transport = connect(factory)
        with capturedLogs() as events:
            proto.dataReceived(
                (8 * 1024 * 1024).to_bytes(4, "big") + b"x" * (256 * 1024)
            )
        [error] = takeMessages(transport)
        self.assertEqual(error.code, wire.ERR_TOO_LARGE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(proto._buffer), 0)
        [event] = [e for e in events if e.get("log_level").name == "warn"]
        self.assertIn("before its handshake", event["log_format"])

    def test_largeMessageAfterChallenge(self) -> None:
        """
        With tokens required, a peer that said HELLO but has not proved a
        token is still held to handshake-sized messages.
        """
        from imageproto.protocol.tokens import TokenTable

        clock = Clock()
        factory = receiverFactory(clock)
        factory.tokens = TokenTable({b"secret": ["*"]})
        proto, transport = connect(factory)
        proto.dataReceived(framed(wire.Hello("cam", wire.CAP_AUTH, 1)))
        [challenge] = takeMessages(transport)
        self.assertIsInstance(challenge, wire.Challenge)
        proto.dataReceived((HANDSHAKE_MAX_BYTES + 1).to_bytes(4, "big"))
        [error] = takeMessages(transport)
        self.assertEqual(error.code, wire.ERR_TOO_LARGE)

    def test_framesAfterWelcome(self) -> None:
        """
        After WELCOME, frames up to the factory's limit are read, and
        WELCOME announces that limit.
        """
        clock = Clock()
        factory = receiverFactory(clock)
        proto, transport = connect(factory)
        proto.dataReceived(framed(wire.Hello("cam", 0, 1)))
        [welcome] = takeMessages(transport)
        self.assertEqual(welcome.maxMessageBytes, factory.maxMessageBytes)
        proto.dataReceived(framed(wire.Frame(0, JPEG * 100)))
        self.assertEqual(len(factory.streams.frames), 1)
        self.assertFalse(transport.disconnecting)

    def test_bufferBudgetPausesLaterPeer(self) -> None:
        """
        Partial messages across connections count against the factory's
        buffer budget: a peer whose message does not fit stops being read
        until another's message completes, then reads on and delivers it.
        """
        clock = Clock()
        factory = receiverFactory(clock)
        factory.bufferBudget = BufferBudget(30000)
        first, firstTransport = welcomed(factory, "a")
        second, secondTransport = welcomed(factory, "b")
        big = framed(wire.Frame(0, b"\xff\xd8" + b"x" * 20000))
        first.dataReceived(big[:1000])
        self.assertEqual(firstTransport.producerState, "producing")
        second.dataReceived(big[:1000])
        self.assertEqual(secondTransport.producerState, "paused")
        self.assertEqual(factory.bufferBudget.used, len(big))
        first.dataReceived(big[1000:])
        self.assertEqual(secondTransport.producerState, "producing")
        second.dataReceived(big[1000:])
        self.assertEqual(
            [name for name, frame, when in factory.streams.frames], ["a", "b"]
        )
        self.assertEqual(factory.bufferBudget.used, 0)

    def test_bufferBudgetReleasedOnClose(self) -> None:
        """
        A connection that closes with a partial message gives its
        reservation back, and one that closes while waiting leaves the
        queue.
        """
        clock = Clock()
        factory = receiverFactory(clock)
        factory.bufferBudget = BufferBudget(30000)
        first, _ = welcomed(factory, "a")
        second, _ = welcomed(factory, "b")
        third, thirdTransport = welcomed(factory, "c")
        big = framed(wire.Frame(0, b"\xff\xd8" + b"x" * 20000))
        first.dataReceived(big[:1000])
        second.dataReceived(big[:1000])
        third.dataReceived(big[:1000])
        self.assertEqual(factory.bufferBudget.waiting, 2)
        second.connectionLost(None)
        self.assertEqual(factory.bufferBudget.waiting, 1)
        first.connectionLost(None)
        self.assertEqual(thirdTransport.producerState, "producing")
        self.assertEqual(factory.bufferBudget.used, len(big))

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
        [error] = takeMessages(transport)
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
        [error] = takeMessages(transport)
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
        [error] = takeMessages(transport)
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
        [welcome] = takeMessages(transport)
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
        self.assertEqual(takeMessages(transport)[0].heartbeat, 2)
        for _ in range(5):
            clock.advance(2)
            [ping] = takeMessages(transport)
            proto.dataReceived(framed(wire.Pong(ping.token)))
        self.assertFalse(transport.disconnecting)
        clock.pump([2, 2, 2])
        out = takeMessages(transport)
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
        takeMessages(transport)
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
        acks = [m.seq for m in takeMessages(transport)]
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
        takeMessages(transport)
        proto.dataReceived(framed(wire.Welcome(heartbeat=2)))
        clock.advance(5)
        proto.dataReceived(framed(wire.Ping(1)))
        clock.advance(5.9)
        self.assertEqual([type(m) for m in takeMessages(transport)], [wire.Pong])
        clock.advance(0.1)
        [error] = takeMessages(transport)
        self.assertEqual(error.code, wire.ERR_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_senderHandshakeTimeout(self) -> None:
        """
        A server that never answers HELLO is dropped after
        C{handshakeTimeout}.
        """
        clock = Clock()
        proto, transport = connect(self.senderFactory(clock, handshakeTimeout=4))
        takeMessages(transport)
        clock.advance(4)
        [error] = takeMessages(transport)
        self.assertEqual(error.code, wire.ERR_TIMEOUT)

    def test_ownHeartbeat(self) -> None:
        """
        When the server announces no heartbeat, a sender with its own pings
        the server and applies the idle timeout to the answers.
        """
        clock = Clock()
        proto, transport = connect(self.senderFactory(clock, heartbeat=1))
        takeMessages(transport)
        proto.dataReceived(framed(wire.Welcome(heartbeat=0)))
        clock.advance(1)
        [ping] = takeMessages(transport)
        self.assertIsInstance(ping, wire.Ping)
        proto.dataReceived(framed(wire.Pong(ping.token)))
        clock.pump([1, 1, 1])
        self.assertEqual(
            [type(m) for m in takeMessages(transport)],
            [wire.Ping, wire.Ping, wire.Error],
        )

    def test_noHeartbeatNoTimeout(self) -> None:
        """
        With no heartbeat on either end there is no idle deadline.
        """
        clock = Clock()
        proto, transport = connect(self.senderFactory(clock))
        proto.dataReceived(framed(wire.Welcome(heartbeat=0)))
        takeMessages(transport)
        clock.advance(3600)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
