# -*- test-case-name: tests.test_fuzz -*-
"""
Bad input, generated: the wire decoder and both protocols are driven with
well over 100,000 generated inputs, and nothing but the module's own errors
escapes.

  - A seeded mutation loop (bit flips, byte changes, insertions, deletions,
    truncations, splices and length-field edits of valid messages) feeds
    L{wire.decodeMessage} 100,000 inputs; it may only return a message or
    raise L{wire.WireError}, and whatever it returns must encode again.
  - A second seeded loop feeds 10,000 mutated, length-prefixed message
    streams (in random chunkings) to each protocol on a C{StringTransport}:
    no exception escapes C{dataReceived}, and a bad stream ends in a clean
    disconnect.
  - Hypothesis adds its own searches (random bytes, random chunked streams).

The real-process half (the server keeps serving a good sender while
garbage arrives on other connections) is in L{tests.test_faults}.

Runs in about ten seconds on one core.
"""

from __future__ import annotations

import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.protocol.tokens import TokenTable
from imageproto.protocol.factories import ReceiverFactory, SenderFactory
from tests.helpers import FakeSender, StubRegistry, lengthPrefixed, messages

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(64)) + b"\xff\xd9"
DECODER_INPUTS = 100_000
STREAM_INPUTS = 10_000

SAMPLES = [
    wire.Hello("cam-1", wire.CAP_LIVE | wire.CAP_AUTH, 2**63),
    wire.Welcome(wire.SCAP_HEARTBEAT, 1 << 20, 2),
    wire.Frame(7, JPEG, 1.5, 2.5, 3),
    wire.Ack(2**64 - 1),
    wire.Reject(3, "not a JPEG"),
    wire.Result(4, [{"label": "cat", "confidence": 0.5, "box": [1, 2, 3, 4]}], 99, JPEG),
    wire.Error(wire.ERR_AUTH, "refused"),
    wire.Bye("done"),
    wire.Ping(1),
    wire.Pong(2),
    wire.Challenge(bytes(32)),
    wire.Auth(bytes(32), bytes(range(32))),
]
ENCODED = [wire.encodeMessage(m) for m in SAMPLES]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """
    One to four random edits of C{data}.
    """
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op == 2:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and out:
            del out[pos : pos + rng.randint(1, 8)]
        elif op == 4:
            del out[rng.randrange(len(out) + 1) :]
        elif op == 5:
            other = rng.choice(ENCODED)
            start = rng.randrange(len(other) + 1)
            out[pos:pos] = other[start : start + rng.randint(1, 40)]
        elif op == 6 and len(out) >= 6:
            # Rewrite a plausible length field with an extreme value.
            i = rng.randrange(2, len(out) - 3)
            out[i : i + 4] = struct.pack(
                "!I", rng.choice([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])
            )
        elif op == 7 and len(out) >= 2:
            out[1] = rng.randrange(256)
    return bytes(out)


def checkDecoder(data: bytes) -> None:
    """
    L{wire.decodeMessage} returns a message that encodes again, or raises
    L{wire.WireError}; anything else propagates and fails the test.
    """
    try:
        message = wire.decodeMessage(data)
    except wire.WireError:
        return
    wire.encodeMessage(message)


def receiverProtocol(tokens: bool):
    clock = Clock()
    streams = StubRegistry(clock)
    factory = ReceiverFactory(
        streams, clock, maxMessageBytes=4096, heartbeat=1, pipeline=streams
    )
    factory.idleTimeout = 3
    if tokens:
        factory.tokens = TokenTable.parse("imageproto-test-token-0001 *")
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def senderProtocol():
    clock = Clock()
    factory = SenderFactory(FakeSender(), clock, maxMessageBytes=4096)
    factory.token = b"imageproto-test-token-0001"
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def feed(proto, transport, clock, stream: bytes, rng: random.Random) -> None:
    """
    Deliver C{stream} in random chunks, let time pass, and end the
    connection as a transport would.
    """
    i = 0
    while i < len(stream) and not transport.disconnecting:
        step = rng.choice([1, 2, 7, 64, 1 << 20])
        proto.dataReceived(stream[i : i + step])
        i += step
    clock.advance(rng.choice([0, 1, 5]))
    errors = [m for m in messages(transport) if isinstance(m, wire.Error)]
    if errors:
        # An ERROR is always followed by closing the connection.
        assert transport.disconnecting, errors
    proto.connectionLost(None)
    clock.advance(10)
    return errors


def mutatedStream(rng: random.Random, start: list[bytes]) -> bytes:
    parts = list(start)
    for _ in range(rng.randint(1, 6)):
        message = rng.choice(ENCODED)
        if rng.random() < 0.6:
            message = mutate(rng, message)
        parts.append(lengthPrefixed(message))
    stream = b"".join(parts)
    if rng.random() < 0.3:
        stream = mutate(rng, stream)
    return stream


class DecoderFuzzTests(SynchronousTestCase):
    def test_mutationLoop(self) -> None:
        """
        100,000 mutated messages: the decoder only ever returns a message or
        raises L{wire.WireError}, and rejects most mutations.
        """
        rng = random.Random(20261121)
        decoded = 0
        for n in range(DECODER_INPUTS):
            data = mutate(rng, ENCODED[n % len(ENCODED)])
            try:
                message = wire.decodeMessage(data)
            except wire.WireError:
                continue
            wire.encodeMessage(message)
            decoded += 1
        # Mutations that keep a valid layout (a flipped bit in a seq) decode;
        # most do not.  Both kinds must occur for the loop to mean anything.
        self.assertGreater(decoded, 1000)
        self.assertLess(decoded, DECODER_INPUTS // 2)

    @settings(max_examples=3000, deadline=None)
    @given(st.binary(max_size=200))
    def test_randomBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes decode or raise L{wire.WireError}.
        """
        checkDecoder(data)

    @settings(max_examples=3000, deadline=None)
    @given(
        st.integers(1, 0xFF),
        st.sampled_from(range(1, 13)),
        st.binary(max_size=120),
    )
    def test_validHeaderRandomBody(self, version, kind, body) -> None:
        """
        A correct header (or a wrong version) over a random body decodes or
        raises L{wire.WireError}; a wrong version raises L{wire.VersionError}.
        """
        data = bytes([version, kind]) + body
        if version != wire.PROTOCOL_VERSION:
            self.assertRaises(wire.VersionError, wire.decodeMessage, data)
        else:
            checkDecoder(data)


class ProtocolFuzzTests(SynchronousTestCase):
    def test_receiverMutationLoop(self) -> None:
        """
        10,000 mutated streams, half after a valid HELLO and half against a
        server that requires tokens: nothing escapes, and each connection
        either survives or is closed by the server.
        """
        rng = random.Random(1)
        hello = lengthPrefixed(wire.encodeMessage(wire.Hello("cam-1", wire.CAP_AUTH)))
        closed = 0
        for n in range(STREAM_INPUTS):
            proto, transport, clock = receiverProtocol(tokens=n % 4 == 3)
            start = [hello] if n % 2 else []
            closed += bool(feed(proto, transport, clock, mutatedStream(rng, start), rng))
            self.assertEqual(clock.getDelayedCalls(), [])
        self.assertGreater(closed, STREAM_INPUTS // 4)

    def test_senderMutationLoop(self) -> None:
        """
        10,000 mutated streams from a "server" into the sender protocol:
        nothing escapes.
        """
        rng = random.Random(2)
        welcome = lengthPrefixed(wire.encodeMessage(wire.Welcome(heartbeat=1)))
        for n in range(STREAM_INPUTS):
            proto, transport, clock = senderProtocol()
            start = [welcome] if n % 2 else []
            feed(proto, transport, clock, mutatedStream(rng, start), rng)
            self.assertEqual(clock.getDelayedCalls(), [])

    @settings(
        max_examples=1500,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.lists(st.binary(min_size=1, max_size=64), max_size=12), st.booleans())
    def test_receiverRandomChunks(self, chunks, tokens) -> None:
        """
        Random byte chunks into the server protocol: nothing escapes; a
        connection the server closed gets no further writes.
        """
        proto, transport, clock = receiverProtocol(tokens)
        for chunk in chunks:
            proto.dataReceived(chunk)
            if transport.disconnecting:
                written = transport.value()
                proto.dataReceived(chunk)
                self.assertEqual(transport.value(), written)
                break
        proto.connectionLost(None)
        clock.advance(10)
        self.assertEqual(clock.getDelayedCalls(), [])
