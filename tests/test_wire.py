# -*- test-case-name: tests.test_wire -*-
"""
Tests for L{imageproto.wire}: round trips, the test vectors published in
PROTOCOL.md, validators, and property-based tests that malformed input
only ever raises L{WireError}.
"""

from __future__ import annotations

import json
import math
import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from imageproto import wire
from imageproto.wire import (
    Ack,
    Auth,
    Bye,
    Challenge,
    Error,
    Frame,
    Hello,
    Ping,
    Pong,
    Reject,
    Result,
    VersionError,
    Welcome,
    WireError,
    decodeMessage,
    encodeMessage,
    isJpeg,
)
from tests.helpers import TINY_JPEG, protocolBlocks, wireBytes

_TYPES = {
    "HELLO": Hello,
    "WELCOME": Welcome,
    "FRAME": Frame,
    "ACK": Ack,
    "REJECT": Reject,
    "RESULT": Result,
    "ERROR": Error,
    "BYE": Bye,
    "PING": Ping,
    "PONG": Pong,
    "CHALLENGE": Challenge,
    "AUTH": Auth,
}
_BYTE_FIELDS = {"jpeg", "nonce", "digest"}


def messageFromFields(fields: dict) -> wire.Message:
    """
    Build a message from a test vector's C{message} object.
    """
    fields = dict(fields)
    cls = _TYPES[fields.pop("type")]
    for name in _BYTE_FIELDS & fields.keys():
        fields[name] = bytes.fromhex(fields[name])
    return cls(**fields)


def framed(message: wire.Message) -> bytes:
    # Built here from encodeMessage, not taken from tests.helpers (which uses
    # wire.encodeFramed): it is the reference encodeFramed is checked against.
    body = encodeMessage(message)
    return struct.pack("!I", len(body)) + body


class ProtocolVectorsTests(SynchronousTestCase):
    """
    The test vectors in PROTOCOL.md hold for this implementation in both
    directions.
    """

    def vectors(self):
        return [json.loads(block) for block in protocolBlocks("vector")]

    def test_everyTypeHasAVector(self):
        """
        PROTOCOL.md has at least one vector for every message type.
        """
        types = {v["message"]["type"] for v in self.vectors()}
        self.assertEqual(types, set(_TYPES))

    def test_encodeGivesTheWireBytes(self):
        """
        Encoding each vector's fields, with its length prefix, gives exactly
        the vector's bytes.
        """
        for v in self.vectors():
            message = messageFromFields(v["message"])
            self.assertEqual(framed(message).hex(), wireBytes(v["wire"]).hex(), v["name"])

    def test_decodeGivesTheFields(self):
        """
        Each vector's length prefix counts the bytes after it, and decoding
        them gives the vector's fields.
        """
        for v in self.vectors():
            raw = wireBytes(v["wire"])
            (length,) = struct.unpack("!I", raw[:4])
            self.assertEqual(length, len(raw) - 4, v["name"])
            self.assertEqual(
                decodeMessage(raw[4:]), messageFromFields(v["message"]), v["name"]
            )

    def test_invalidVectorsAreRefused(self):
        """
        Each invalid vector has a consistent length prefix and its message
        raises L{VersionError} (error C{version}) or a L{WireError} that is
        not a L{VersionError} (error C{malformed}).
        """
        blocks = [json.loads(block) for block in protocolBlocks("invalid")]
        self.assertGreaterEqual(len(blocks), 10)
        for v in blocks:
            raw = wireBytes(v["wire"])
            (length,) = struct.unpack("!I", raw[:4])
            self.assertEqual(length, len(raw) - 4, v["name"])
            with self.assertRaises(WireError, msg=v["name"]) as caught:
                decodeMessage(raw[4:])
            self.assertEqual(
                isinstance(caught.exception, VersionError),
                v["error"] == "version",
                v["name"],
            )

    def test_sessionLinesDecode(self):
        """
        Every line of the worked example in PROTOCOL.md is one framed, valid
        message that re-encodes to the same bytes.
        """
        lines = [
            line
            for line in protocolBlocks("session")[0].splitlines()
            if line and not line.startswith("#")
        ]
        self.assertGreater(len(lines), 5)
        for line in lines:
            direction, hexText = line.split(" ", 1)
            self.assertIn(direction, ("C", "S"))
            raw = wireBytes(hexText)
            self.assertEqual(framed(decodeMessage(raw[4:])), raw, line)


EDGE_MESSAGES = [
    Hello("cam-1", wire.CAP_LIVE | wire.CAP_RESULTS, 0),
    Hello("", 0, 2**64 - 1),
    Hello("x" * 255, 2**32 - 1, 1),
    Hello("\N{GREEK SMALL LETTER ALPHA}" * 127),
    Welcome(0, 0, 0),
    Welcome(2**32 - 1, 2**32 - 1, 2**16 - 1, 2**64 - 1),
    Welcome(wire.SCAP_RESUME, 1, 0, 0),
    Reject(1, "disk full", wire.REJECT_RETRY),
    Reject(1, "", 0),
    Frame(0, b""),
    Frame(2**64 - 1, TINY_JPEG, 1.7e9, -0.0, 2**32 - 1),
    Frame(5, b"\x00" * 70000, 5e-324, 1.7976931348623157e308, 0),
    Frame(6, TINY_JPEG, metadata="{}"),
    Frame(7, TINY_JPEG, metadata='""'),
    Frame(8, TINY_JPEG, metadata='"' + "\N{LATIN SMALL LETTER E WITH ACUTE}" * 2047 + '"'),
    Frame(9, TINY_JPEG, metadata=' { "a" : [1, {"b": null}] } '),
    Ack(0),
    Ack(2**64 - 1),
    Reject(0),
    Reject(2**64 - 1, "r" * 65535),
    Result(0),
    Result(2**64 - 1, [{"label": "cat", "confidence": 1.0, "box": [0, 0, 1, 1]}], 2**32 - 1, TINY_JPEG),
    Result(3, [None, True, "\N{SNOWMAN}", -1.5, 10**30, {"nested": [[]]}]),
    Error(0),
    Error(2**16 - 1, "\N{SNOWMAN}" * 21845),
    Bye(),
    Bye("b" * 65535),
    Ping(0),
    Ping(2**64 - 1),
    Pong(0),
    Pong(2**64 - 1),
    Challenge(b"\x00" * 32),
    Auth(b"\xff" * 32, b"\x00" * 32),
]


class RoundTripTests(SynchronousTestCase):
    """
    Messages survive encoding and decoding unchanged, at the edges of their
    fields' ranges.
    """

    def test_edgeValues(self):
        """
        Every message in L{EDGE_MESSAGES} (minimum and maximum integers,
        empty and longest strings, empty JPEG) decodes to an equal message,
        and every type is represented.
        """
        self.assertEqual({type(m) for m in EDGE_MESSAGES}, set(_TYPES.values()))
        for message in EDGE_MESSAGES:
            data = encodeMessage(message)
            self.assertEqual(decodeMessage(data), message)
            self.assertEqual(encodeMessage(decodeMessage(data)), data)

    def test_encodeFramedIsPrefixedEncoding(self):
        """
        L{wire.encodeFramed} gives exactly the 4-byte length prefix followed
        by L{encodeMessage}'s bytes, for every message type.
        """
        for message in EDGE_MESSAGES:
            self.assertEqual(wire.encodeFramed(message), framed(message))

    def test_lengthsMatchLayout(self):
        """
        Encoded sizes match the totals PROTOCOL.md gives for each layout.
        """
        self.assertEqual(len(encodeMessage(Hello("abc"))), 15 + 3)
        self.assertEqual(len(encodeMessage(Welcome())), 12)
        self.assertEqual(len(encodeMessage(Frame(1, b"j" * 100))), 34 + 100)
        self.assertEqual(len(encodeMessage(Ack(1))), 10)
        self.assertEqual(len(encodeMessage(Reject(1, "ab"))), 12 + 2)
        self.assertEqual(len(encodeMessage(Result(1, [], 0, b"jj"))), 22 + 2 + 2)
        self.assertEqual(len(encodeMessage(Error(1, "abc"))), 6 + 3)
        self.assertEqual(len(encodeMessage(Bye("ab"))), 4 + 2)
        self.assertEqual(len(encodeMessage(Ping(1))), 10)
        self.assertEqual(len(encodeMessage(Challenge(b"n" * 32))), 34)
        self.assertEqual(len(encodeMessage(Auth(b"n" * 32, b"d" * 32))), 66)

    def test_versionErrorIsAWireError(self):
        """
        L{VersionError} is a L{WireError} (itself a C{ValueError}) and
        carries the version received.
        """
        with self.assertRaises(VersionError) as caught:
            decodeMessage(b"\x07\x04" + b"\x00" * 8)
        self.assertEqual(caught.exception.version, 7)
        self.assertIsInstance(caught.exception, WireError)
        self.assertIsInstance(caught.exception, ValueError)

    def test_encodeNonMessage(self):
        """
        Encoding something that is not a message raises L{WireError}.
        """
        self.assertRaises(WireError, encodeMessage, object())


class ValidatorTests(SynchronousTestCase):
    """
    Out-of-range values are refused when a message is constructed, so they
    never reach the encoder.
    """

    def test_integersOutOfRange(self):
        """
        Negative integers, integers wider than their field, and non-integers
        are refused.
        """
        bad = [
            lambda: Ack(-1),
            lambda: Ack(2**64),
            lambda: Ack(1.0),
            lambda: Ping(2**64),
            lambda: Pong(-1),
            lambda: Frame(2**64, b""),
            lambda: Frame(0, b"", dropped=2**32),
            lambda: Frame(0, b"", dropped=-1),
            lambda: Hello("a", capabilities=2**32),
            lambda: Hello("a", session=2**64),
            lambda: Hello("a", session=-1),
            lambda: Welcome(maxMessageBytes=2**32),
            lambda: Welcome(heartbeat=2**16),
            lambda: Result(0, processingMicros=2**32),
            lambda: Error(2**16),
            lambda: Error("1"),
            lambda: Reject(-1),
        ]
        for make in bad:
            self.assertRaises((TypeError, ValueError), make)

    def test_stringsTooLong(self):
        """
        Strings are limited by their UTF-8 length, not their character count.
        """
        Hello("\N{LATIN SMALL LETTER E WITH ACUTE}" * 127)  # 254 bytes
        self.assertRaises(ValueError, Hello, "\N{LATIN SMALL LETTER E WITH ACUTE}" * 128)
        self.assertRaises(ValueError, Hello, "x" * 256)
        self.assertRaises(ValueError, Reject, 0, "x" * 65536)
        self.assertRaises(ValueError, Error, 1, "x" * 65536)
        self.assertRaises(ValueError, Bye, "\N{SNOWMAN}" * 21846)
        self.assertRaises(TypeError, Hello, b"bytes")
        self.assertRaises(TypeError, Bye, None)

    def test_bytesFields(self):
        """
        JPEG fields must be C{bytes}; nonces and digests exactly 32 bytes.
        """
        self.assertRaises(TypeError, Frame, 0, "not bytes")
        self.assertRaises(TypeError, Frame, 0, bytearray(b"x"))
        self.assertRaises(TypeError, Result, 0, [], 0, "x")
        self.assertRaises(ValueError, Challenge, b"n" * 31)
        self.assertRaises(ValueError, Challenge, b"n" * 33)
        self.assertRaises(ValueError, Auth, b"n" * 32, b"d" * 31)
        self.assertRaises(ValueError, Auth, "n" * 32, b"d" * 32)

    def test_timesMustBeFinite(self):
        """
        A FRAME's times are refused if NaN or infinite.
        """
        for value in (math.nan, math.inf, -math.inf):
            self.assertRaises(ValueError, Frame, 0, b"", captureTime=value)
            self.assertRaises(ValueError, Frame, 0, b"", sendTime=value)

    def test_detectionsMustBeAList(self):
        """
        RESULT detections must be a list.
        """
        self.assertRaises(TypeError, Result, 0, {"label": "x"})
        self.assertRaises(TypeError, Result, 0, "[]")

    def test_unserialisableDetections(self):
        """
        Detections JSON cannot carry (NaN, sets, circular lists) make
        encoding raise L{WireError}.
        """
        circular: list = []
        circular.append(circular)
        for detections in ([math.nan], [math.inf], [{1, 2}], [b"x"], circular):
            self.assertRaises(WireError, encodeMessage, Result(0, detections))


def _result(jsonText: bytes, jpeg: bytes = b"") -> bytes:
    return (
        b"\x01\x06"
        + struct.pack("!QII", 0, 0, len(jsonText))
        + jsonText
        + struct.pack("!I", len(jpeg))
        + jpeg
    )


class RegressionTests(SynchronousTestCase):
    """
    Inputs that once escaped L{decodeMessage} as something other than
    L{WireError}, or decoded to a message that could not be re-encoded.
    """

    def test_deeplyNestedJson(self):
        """
        RESULT JSON nested deeper than the interpreter's recursion limit
        raises L{WireError}, not C{RecursionError}.
        """
        for depth in (5000, 100000):
            self.assertRaises(
                WireError, decodeMessage, _result(b"[" * depth + b"]" * depth)
            )

    def test_nonFiniteJson(self):
        """
        NaN, Infinity and numbers beyond a double's range are not JSON:
        they used to decode to a RESULT that could not be encoded again.
        """
        for text in (b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1e400]", b"[-1e999]"):
            self.assertRaises(WireError, decodeMessage, _result(text))

    def test_hugeJsonInteger(self):
        """
        An integer too long for the interpreter to convert raises
        L{WireError}.
        """
        self.assertRaises(WireError, decodeMessage, _result(b"[1" + b"0" * 5000 + b"]"))

    def test_nonFiniteFrameTime(self):
        """
        A FRAME whose capture or send time is NaN or infinite raises
        L{WireError} rather than the constructor's C{ValueError} message.
        """
        good = encodeMessage(Frame(1, TINY_JPEG, 1.0, 2.0))
        for position in (len(good) - 20, len(good) - 12):
            for value in (math.nan, math.inf, -math.inf):
                bad = good[:position] + struct.pack("!d", value) + good[position + 8 :]
                self.assertRaises(WireError, decodeMessage, bad)

    def test_nonCanonicalJson(self):
        """
        RESULT JSON with whitespace, escapes or repeated keys decodes; it
        re-encodes in the compact form, which decodes to an equal message.
        """
        message = decodeMessage(_result(b' [ {"a" : 1, "a": 2, "b": "\\u00e9"} ] '))
        self.assertEqual(message.detections, [{"a": 2, "b": "\N{LATIN SMALL LETTER E WITH ACUTE}"}])
        self.assertEqual(decodeMessage(encodeMessage(message)), message)


class IsJpegTests(SynchronousTestCase):
    """
    L{isJpeg} accepts what starts with C{FF D8 FF} and has C{FF D9} within
    the last 32 bytes, after the first three.
    """

    def test_accepts(self):
        """
        The minimal payload, a payload with up to 30 bytes of padding after
        EOI, and one whose EOI ends it exactly, are JPEGs.
        """
        self.assertTrue(isJpeg(TINY_JPEG))
        self.assertTrue(isJpeg(b"\xff\xd8\xff\xff\xd9"))
        self.assertTrue(isJpeg(b"\xff\xd8\xff" + b"x" * 1000 + b"\xff\xd9"))
        self.assertTrue(isJpeg(b"\xff\xd8\xff" + b"x" * 1000 + b"\xff\xd9" + b"\x00" * 30))

    def test_refuses(self):
        """
        Empty data, a missing or wrong start marker, a missing EOI, an EOI
        more than 32 bytes from the end, and an EOI overlapping the start
        marker are not JPEGs.
        """
        for data in (
            b"",
            b"\xff\xd8",
            b"\xff\xd8\xff",
            b"\xff\xd8\xff\xd9",
            b"\x89PNG\r\n\x1a\n" + b"\xff\xd9",
            b"\xff\xd8\x00" + b"x" * 10 + b"\xff\xd9",
            b"\xff\xd8\xff" + b"x" * 1000,
            b"\xff\xd8\xff" + b"x" * 1000 + b"\xff\xd9" + b"\x00" * 31,
        ):
            self.assertFalse(isJpeg(data), data[:16])


# Hypothesis strategies for valid messages.

_u16 = st.integers(0, 2**16 - 1)
_u32 = st.integers(0, 2**32 - 1)
_u64 = st.integers(0, 2**64 - 1)
_text = st.text(max_size=40)
_times = st.floats(allow_nan=False, allow_infinity=False)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

messages = st.one_of(
    st.builds(Hello, st.text(max_size=63), _u32, _u64),
    st.builds(
        lambda caps, size, beat, resume: Welcome(
            caps, size, beat, resume if caps & wire.SCAP_RESUME else None
        ),
        _u32,
        _u32,
        _u16,
        _u64,
    ),
    st.builds(Frame, _u64, st.binary(max_size=64), _times, _times, _u32),
    st.builds(
        Frame,
        _u64,
        st.binary(max_size=16),
        _times,
        _times,
        _u32,
        (st.dictionaries(st.text(max_size=8), _json, max_size=4) | st.text(max_size=20)).map(
            wire.encodeMetadata
        ),
    ),
    st.builds(Ack, _u64),
    st.builds(Reject, _u64, _text, st.none() | st.integers(0, 255)),
    st.builds(Result, _u64, st.lists(_json, max_size=4), _u32, st.binary(max_size=32)),
    st.builds(Error, _u16, _text),
    st.builds(Bye, _text),
    st.builds(Ping, _u64),
    st.builds(Pong, _u64),
    st.builds(Challenge, st.binary(min_size=32, max_size=32)),
    st.builds(Auth, st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
)
encodings = messages.map(encodeMessage)


@st.composite
def truncations(draw):
    data = draw(encodings)
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def mutations(draw):
    data = bytearray(draw(encodings))
    data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def extensions(draw):
    return draw(encodings) + draw(st.binary(min_size=1, max_size=16))


# Bytes that get past the version check, so the body decoders see them.
_headed = st.builds(
    lambda kind, rest: bytes([wire.PROTOCOL_VERSION, kind]) + rest,
    st.integers(0, 16),
    st.binary(max_size=120),
)

# RESULT bodies spliced from JSON tokens, including ones that are not JSON
# (NaN, out-of-range numbers) and runs deep enough to exhaust the stack.
_jsonTokens = st.sampled_from(
    [b"[", b"]", b"{", b"}", b",", b":", b'"k"', b"1", b"-0.5", b"1e400", b"NaN",
     b"-Infinity", b"true", b"null", b" ", b"\xff", b"[" * 2000, b"]" * 2000]
)
_resultBodies = st.builds(
    lambda tokens, jpeg: _result(b"".join(tokens), jpeg),
    st.lists(_jsonTokens, max_size=12),
    st.binary(max_size=8),
)

malformed = st.one_of(
    st.binary(max_size=120), _headed, _resultBodies, truncations(), mutations(), extensions()
)


class PropertyTests(SynchronousTestCase):
    """
    Properties of the codec over generated messages and generated garbage.
    """

    @settings(max_examples=400, deadline=None)
    @given(messages)
    def test_roundTrip(self, message):
        """
        Any valid message decodes from its encoding to an equal message.
        """
        self.assertEqual(decodeMessage(encodeMessage(message)), message)

    @settings(max_examples=1500, deadline=None)
    @given(malformed)
    @example(_result(b"[" * 3000 + b"]" * 3000))
    @example(_result(b"[1e400]"))
    @example(_result(b"[NaN]"))
    @example(b"\x01\x06")
    @example(b"\x01\x01" + b"\x00" * 12 + b"\x01\xff")
    @example(b"\x01\x03" + b"\x00" * 12 + b"\x7f\xf8" + b"\x00" * 18)
    def test_malformedInput(self, data):
        """
        Arbitrary bytes, truncated, mutated or extended encodings either
        raise L{WireError} or decode to a message that re-encodes to the same
        bytes (for RESULT, whose JSON may be written in more than one way, to
        bytes that decode to an equal message).  Any other exception fails.
        C{decodeFrame} gives the same message or C{None}, and never accepts
        what the decoder refuses.
        """
        try:
            fast = wire.decodeFrame(data)
        except WireError:
            fast = WireError
        try:
            message = decodeMessage(data)
        except WireError:
            # The receiver's FRAME shortcut agrees: nothing, or the error.
            self.assertIn(fast, (None, WireError))
            return
        # The shortcut decodes the same FRAME, or leaves it to the decoder.
        self.assertIn(fast, (None, message))
        again = encodeMessage(message)
        if isinstance(message, Result):
            self.assertEqual(decodeMessage(again), message)
            self.assertEqual(again[:10], data[:10])
            self.assertEqual(again[-len(message.jpeg) - 4 :], data[-len(message.jpeg) - 4 :])
        else:
            self.assertEqual(again, data)


def _frameWith(tail: bytes) -> bytes:
    """
    A FRAME body (the tiny JPEG, zero times) followed by C{tail}.
    """
    return encodeMessage(Frame(0, TINY_JPEG)) + tail


def _metadataTail(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def _nested(depth: int) -> str:
    """
    Metadata text nesting C{depth} objects and arrays: an object of arrays.
    """
    return '{"a":' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


class MetadataTests(SynchronousTestCase):
    """
    Per-frame metadata: L{wire.encodeMetadata}, L{wire.decodeMetadata}, the
    L{Frame} constructor's check and the decoder's.
    """

    def test_capabilityBits(self):
        """
        The metadata capabilities have their published values and overlap
        no other bit of the same word.
        """
        self.assertEqual(wire.CAP_METADATA, 0x20)
        self.assertEqual(wire.SCAP_METADATA, 0x10)
        self.assertEqual(wire.MAX_METADATA_BYTES, 4096)
        senderBits = [wire.CAP_LIVE, wire.CAP_RESULTS, wire.CAP_AUTH, wire.CAP_RESUME, wire.CAP_RETRY]
        serverBits = [wire.SCAP_DETECT, wire.SCAP_ANNOTATED, wire.SCAP_HEARTBEAT, wire.SCAP_RESUME]
        self.assertFalse(wire.CAP_METADATA & sum(senderBits))
        self.assertFalse(wire.SCAP_METADATA & sum(serverBits))

    def test_encodeCompact(self):
        """
        L{wire.encodeMetadata} writes compact JSON, non-ASCII characters as
        themselves, keys in the order given; L{wire.decodeMetadata} reads it
        back.
        """
        value = {"site": "caf\N{LATIN SMALL LETTER E WITH ACUTE}", "n": 1, "gps": [1.5, -2], "ok": True, "x": None}
        text = wire.encodeMetadata(value)
        self.assertEqual(
            text, '{"site":"caf\N{LATIN SMALL LETTER E WITH ACUTE}","n":1,"gps":[1.5,-2],"ok":true,"x":null}'
        )
        self.assertEqual(wire.decodeMetadata(text), value)
        self.assertEqual(wire.encodeMetadata("door 1"), '"door 1"')
        self.assertEqual(wire.decodeMetadata('"door 1"'), "door 1")

    def test_encodeRefuses(self):
        """
        L{wire.encodeMetadata} raises C{ValueError} for a top level that is
        not a dict or a str, for values JSON cannot hold, and beyond the
        size and depth bounds.
        """
        circular: dict = {}
        circular["self"] = circular
        for value in (
            [1],
            1,
            1.5,
            True,
            None,
            b"{}",
            {"a": math.nan},
            {"a": math.inf},
            {"a": {1, 2}},
            {"a": b"x"},
            circular,
            "x" * 4095,
            {"a": "\N{SNOWMAN}" * 1400},
            {"a": "\ud800"},
            {"deep": json.loads(_nested(32))},
        ):
            self.assertRaises(ValueError, wire.encodeMetadata, value)

    def test_sizeBoundInBytes(self):
        """
        The bound counts UTF-8 bytes, not characters: 4096 bytes pass, 4097
        do not, however few characters they are.
        """
        ascii4096 = '"' + "a" * 4094 + '"'
        wide4096 = '"' + "\N{LATIN SMALL LETTER E WITH ACUTE}" * 2047 + '"'
        wide4098 = '"' + "\N{LATIN SMALL LETTER E WITH ACUTE}" * 2048 + '"'
        for text in (ascii4096, wide4096):
            self.assertEqual(len(text.encode("utf-8")), 4096)
            Frame(0, b"", metadata=text)
            self.assertEqual(decodeMessage(_frameWith(_metadataTail(text.encode("utf-8")))).metadata, text)
        for text in ('"' + "a" * 4095 + '"', wide4098):
            self.assertRaises(ValueError, Frame, 0, b"", metadata=text)
            self.assertRaises(ValueError, wire.decodeMetadata, text)
            self.assertRaises(WireError, decodeMessage, _frameWith(_metadataTail(text.encode("utf-8"))))

    def test_depthBound(self):
        """
        Metadata may nest 32 objects and arrays, not 33; text nested far
        deeper than the interpreter's recursion limit is refused the same
        way, as C{ValueError} or L{WireError}, never C{RecursionError}.
        """
        Frame(0, b"", metadata=_nested(32))
        self.assertEqual(wire.decodeMetadata('{"a":{"b":[1]}}'), {"a": {"b": [1]}})
        deepest = '{"a":' + "[" * 2040 + "]" * 2040 + "}"
        self.assertLessEqual(len(deepest), 4096)
        for text in (_nested(33), '{"a":' * 33 + "1" + "}" * 33, deepest):
            self.assertRaises(ValueError, Frame, 0, b"", metadata=text)
            self.assertRaises(ValueError, wire.decodeMetadata, text)
            self.assertRaises(WireError, decodeMessage, _frameWith(_metadataTail(text.encode())))

    def test_constructorRefuses(self):
        """
        The L{Frame} constructor takes C{None} or valid metadata text: other
        JSON raises C{ValueError}, a value that is not a C{str} C{TypeError}.
        """
        for text in ("", " ", "[]", "1", "null", "true", "{", '{"a":NaN}', '{"a":1e400}',
                     '{"a":Infinity}', "{}{}", "'x'", "\ud800"):
            self.assertRaises(ValueError, Frame, 0, b"", metadata=text)
        for value in ({}, {"a": 1}, b"{}", 1):
            self.assertRaises(TypeError, Frame, 0, b"", metadata=value)

    def test_withoutMetadataUnchanged(self):
        """
        A FRAME without metadata is 34 bytes longer than its JPEG, as before
        metadata existed, and decodes with C{metadata} C{None}; with
        metadata it is 2 + m bytes longer still.
        """
        self.assertEqual(len(encodeMessage(Frame(1, b"j" * 100))), 34 + 100)
        self.assertIsNone(decodeMessage(encodeMessage(Frame(1, b"j"))).metadata)
        self.assertEqual(len(encodeMessage(Frame(1, b"j" * 100, metadata="{}"))), 34 + 100 + 4)

    def test_decoderRefusesBadMetadata(self):
        """
        Bytes after a FRAME's trailer that are not valid metadata fields
        make it malformed: L{WireError}.
        """
        for tail in (
            b"\x00",
            b"\x00\x00",
            _metadataTail(b"{}")[:-1],
            _metadataTail(b"{}") + b"\x00",
            _metadataTail(b'"\xff"'),
            _metadataTail(b'"\xc0\x80"'),
            _metadataTail(b"{"),
            _metadataTail(b"[1]"),
            _metadataTail(b"42"),
            _metadataTail(b"null"),
            _metadataTail(b'{"a":NaN}'),
            _metadataTail(b'{"a":1e999}'),
            struct.pack("!H", 65535) + b"{}",
            _metadataTail(b"{}" + b" " * 4095),
        ):
            self.assertRaises(WireError, decodeMessage, _frameWith(tail))

    def test_decoderAcceptsValidMetadata(self):
        """
        Valid metadata after the trailer decodes into C{metadata}, exactly as
        sent (whitespace and all), and re-encodes to the same bytes.
        """
        for text in ('{"a":1}', ' {"a" : 1} ', '"x"', '{"a":{"b":[1,2,{"c":"\\u00e9"}]}}'):
            data = _frameWith(_metadataTail(text.encode("utf-8")))
            frame = decodeMessage(data)
            self.assertEqual(frame.metadata, text)
            self.assertEqual(encodeMessage(frame), data)

    def test_repeatedTextCheckedOnce(self):
        """
        The same metadata text on frame after frame (a sender's fixed
        metadata) is parsed once, not once per frame; a different text is
        checked again.
        """
        from imageproto.wire import metadata

        calls = []
        real = metadata.decodeMetadata

        def counting(text):
            calls.append(text)
            return real(text)

        self.patch(metadata, "decodeMetadata", counting)
        text = wire.encodeMetadata({"fixed": "for the whole run"})
        del calls[:]
        for seq in range(100):
            Frame(seq, TINY_JPEG, metadata=text)
        self.assertEqual(len(calls), 0)
        Frame(0, TINY_JPEG, metadata='{"other":1}')
        self.assertEqual(calls, ['{"other":1}'])
        self.assertRaises(ValueError, Frame, 0, b"", metadata="[1]")


class BufferInputTests(SynchronousTestCase):
    """
    L{decodeMessage} takes any bytes-like message, as the framing hands it a
    C{bytearray} slice, and keeps no hold on it.
    """

    def test_bytearrayAndMemoryview(self):
        """
        A FRAME decodes the same from C{bytes}, C{bytearray} and
        C{memoryview}, and its JPEG is C{bytes}.
        """
        jpeg = b"\xff\xd8\xff" + bytes(range(256)) + b"\xff\xd9"
        frame = wire.Frame(5, jpeg, 1.5, 2.5, 3)
        data = wire.encodeMessage(frame)
        for kind in (bytes, bytearray, memoryview):
            decoded = wire.decodeMessage(kind(data))
            self.assertEqual(decoded, frame)
            self.assertIs(type(decoded.jpeg), bytes)

    def test_resizableAfterError(self):
        """
        While the L{WireError} for a truncated C{bytearray} message is still
        held, the caller may resize the C{bytearray}.
        """
        data = bytearray(wire.encodeMessage(wire.Frame(1, b"\xff\xd8\xff\xd9"))[:-3])
        try:
            wire.decodeMessage(data)
        except WireError as e:
            error = e
        self.assertIn("truncated message", str(error))
        del data[:]
        self.assertEqual(data, bytearray())


class FastPathTests(SynchronousTestCase):
    """
    The per-frame shortcuts: several framed ACKs at once, an ACK's seq
    without decoding, and payloads passed as views.
    """

    def test_encodeAcks(self):
        """
        C{encodeAcks} is the framed ACKs joined, in order.
        """
        seqs = [0, 1, 2**64 - 1]
        self.assertEqual(
            wire.encodeAcks(seqs), b"".join(wire.encodeFramed(wire.Ack(s)) for s in seqs)
        )
        self.assertEqual(wire.encodeAcks([]), b"")

    def test_framedFrameParts(self):
        """
        C{framedFrameParts} joined is C{encodeFramed} of the FRAME, with or
        without metadata, and its JPEG part is the payload itself, not a
        copy.
        """
        view = wire.asPayload(bytearray(b"\xff\xd8\xff" + bytes(300) + b"\xff\xd9"))
        for frame in (
            wire.Frame(5, TINY_JPEG, 1.5, 2.5, 3),
            wire.Frame(6, view, 1.5, 2.5, 0),
            wire.Frame(7, TINY_JPEG, 1.0, 2.0, 1, '{"camera": "gate \u00e9"}'),
        ):
            parts = wire.framedFrameParts(frame)
            self.assertEqual(b"".join(parts), wire.encodeFramed(frame))
            self.assertIs(parts[1], frame.jpeg)

    def test_frameParts(self):
        """
        C{frameParts} of a FRAME's fields is C{framedFrameParts} of the
        FRAME, and refuses one too long for a length prefix.
        """
        for fields in (
            (5, TINY_JPEG, 1.5, 2.5, 3),
            (7, TINY_JPEG, 1.0, 2.0, 1, '{"camera": "gate \u00e9"}'),
        ):
            self.assertEqual(
                wire.frameParts(*fields), wire.framedFrameParts(wire.Frame(*fields))
            )

        class Huge(bytes):
            def __len__(self):
                return 2**32

        self.assertRaises(WireError, wire.frameParts, 1, Huge(), 1.0, 2.0, 0)

    def test_decodeFrame(self):
        """
        C{decodeFrame} decodes a FRAME without metadata as C{decodeMessage}
        does, from bytes or a view; it is C{None} for anything else (other
        messages, metadata, another version, a length that does not add up)
        and raises L{WireError} for non-finite times.
        """
        frame = wire.Frame(2**64 - 1, TINY_JPEG, 1.25, 2.5, 2**32 - 1)
        body = wire.encodeMessage(frame)
        for data in (body, memoryview(body), bytearray(body)):
            decoded = wire.decodeFrame(data)
            self.assertEqual(decoded, frame)
            self.assertIs(type(decoded.jpeg), bytes)
        self.assertIsNone(
            wire.decodeFrame(wire.encodeMessage(wire.Frame(1, TINY_JPEG, 1.0, 2.0, 0, '"x"')))
        )
        self.assertIsNone(wire.decodeFrame(wire.encodeMessage(wire.Ack(3))))
        self.assertIsNone(wire.decodeFrame(b"\x02" + body[1:]))
        self.assertIsNone(wire.decodeFrame(body[:-1]))
        self.assertIsNone(wire.decodeFrame(body + b"\0"))
        self.assertIsNone(wire.decodeFrame(b""))
        nan = body[: -20] + struct.pack("!ddI", float("nan"), 2.0, 0)
        self.assertRaises(WireError, wire.decodeFrame, nan)
        self.assertRaises(WireError, wire.decodeMessage, nan)

    def test_ackSeq(self):
        """
        C{ackSeq} reads the seq of exactly an ACK, and is C{None} for any
        other message or malformed bytes.
        """
        body = wire.encodeMessage(wire.Ack(77))
        self.assertEqual(wire.ackSeq(body), 77)
        self.assertEqual(wire.ackSeq(memoryview(body)), 77)
        self.assertIsNone(wire.ackSeq(wire.encodeMessage(wire.Ping(77))))
        self.assertIsNone(wire.ackSeq(body[:-1]))
        self.assertIsNone(wire.ackSeq(b"\x02" + body[1:]))
        # In place, in a buffer of framed messages: at an offset, with the
        # length its prefix gives.
        buffer = wire.encodeFramed(wire.Ping(1)) + wire.encodeFramed(wire.Ack(78))
        start = len(wire.encodeFramed(wire.Ping(1)))
        self.assertEqual(wire.ackSeq(buffer, start + 4, len(body)), 78)
        self.assertIsNone(wire.ackSeq(buffer, 4, start - 4))

    def test_payloadViewNotCopied(self):
        """
        C{asPayload} keeps bytes as they are and turns other buffers into a
        flat read-only view of the same memory; a FRAME made from the view
        encodes the same bytes as one made from a copy.
        """
        data = b"\xff\xd8\xff" + bytes(range(200)) + b"\xff\xd9"
        self.assertIs(wire.asPayload(data), data)
        buffer = bytearray(data)
        view = wire.asPayload(buffer)
        self.assertIsInstance(view, memoryview)
        self.assertTrue(view.readonly)
        buffer[3] = 0
        self.assertEqual(view[3], 0)
        self.assertEqual(
            wire.encodeFramed(wire.Frame(1, view, 2.0, 3.0)),
            wire.encodeFramed(wire.Frame(1, bytes(buffer), 2.0, 3.0)),
        )
        self.assertRaises(TypeError, wire.asPayload, "text")

    def test_payloadFromNumpy(self):
        """
        The (N, 1) array C{cv2.imencode} returns becomes a flat view of N
        bytes.
        """
        try:
            import numpy
        except ImportError:
            raise SkipTest("numpy is not installed")
        array = numpy.arange(10, dtype=numpy.uint8).reshape(10, 1)
        view = wire.asPayload(array)
        self.assertEqual(len(view), 10)
        self.assertEqual(view.tobytes(), array.tobytes())

    def test_frameRefusesOtherViews(self):
        """
        A FRAME's payload view must be flat bytes.
        """
        wide = memoryview(b"\x00" * 8).cast("I")
        self.assertRaises(TypeError, wire.Frame, 0, wide)

