# -*- test-case-name: tests.test_embed -*-
"""
Tests for L{imageproto.sender.embed}: a stream an application pushes JPEG
bytes into, with each frame's ACK or RESULT back as a Deferred.
"""

from __future__ import annotations

import struct

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.sender.embed import FrameDropped, FrameRejected, FrameStream, openStream

JPEG = b"\xff\xd8\xff" + b"\x00" * 10 + b"\xff\xd9"


class _Endpoint:
    """
    A client endpoint that connects its factory's protocol to a
    StringTransport at once.
    """

    def __init__(self) -> None:
        self.protocols = []

    def connect(self, factory):
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.protocols.append((proto, transport))
        return succeed(proto)


def _framed(message) -> bytes:
    return wire.encodeFramed(message)


def _sent(transport) -> list:
    data, out = transport.value(), []
    while data:
        (size,) = struct.unpack("!I", data[:4])
        out.append(wire.decodeMessage(data[4 : 4 + size]))
        data = data[4 + size :]
    return out


class FrameStreamTests(SynchronousTestCase):
    def open(self, **options):
        reactor = MemoryReactorClock()
        endpoint = _Endpoint()
        stream = openStream(reactor, endpoint, "cam", **options)
        [(proto, transport)] = endpoint.protocols
        return stream, proto, transport

    def test_sendFiresWithAck(self):
        """
        A frame sent before WELCOME waits for it, goes out with the given
        capture time, and its Deferred fires with the frame's ACK.
        """
        stream, proto, transport = self.open()
        d = stream.send(JPEG, captureTime=12.5)
        self.assertNoResult(d)
        proto.dataReceived(_framed(wire.Welcome()))
        [hello, frame] = _sent(transport)
        self.assertIsInstance(hello, wire.Hello)
        self.assertEqual((frame.seq, frame.jpeg, frame.captureTime), (0, JPEG, 12.5))
        proto.dataReceived(_framed(wire.Ack(0)))
        self.assertEqual(self.successResultOf(d), wire.Ack(0))

    def test_windowQueuesFrames(self):
        """
        A finite stream keeps at most C{window} frames unacknowledged; the
        rest wait and go out as ACKs arrive, and a buffer such as a
        bytearray is sent as it is.
        """
        stream, proto, transport = self.open(window=2)
        proto.dataReceived(_framed(wire.Welcome()))
        transport.clear()
        ds = [stream.send(bytearray(JPEG)) for _ in range(4)]
        self.assertEqual([f.seq for f in _sent(transport)], [0, 1])
        proto.dataReceived(_framed(wire.Ack(0)) + _framed(wire.Ack(1)))
        self.assertEqual([f.seq for f in _sent(transport)], [0, 1, 2, 3])
        self.assertEqual(self.successResultOf(ds[1]), wire.Ack(1))
        self.assertNoResult(ds[2])

    def test_rejectFails(self):
        """
        A REJECTed frame's Deferred fails with L{FrameRejected}.
        """
        stream, proto, transport = self.open()
        proto.dataReceived(_framed(wire.Welcome()))
        d = stream.send(JPEG)
        proto.dataReceived(_framed(wire.Reject(0, "not a JPEG", 0)))
        failure = self.failureResultOf(d, FrameRejected)
        self.assertEqual(failure.value.reason, "not a JPEG")

    def test_liveDropsWithoutRoom(self):
        """
        A live stream never waits: a frame with no room fails with
        L{FrameDropped}.
        """
        stream, proto, transport = self.open(live=True, window=1)
        proto.dataReceived(_framed(wire.Welcome()))
        first = stream.send(JPEG)
        self.failureResultOf(stream.send(JPEG), FrameDropped)
        proto.dataReceived(_framed(wire.Ack(0)))
        self.successResultOf(first)

    def test_results(self):
        """
        With C{results} and a detecting receiver, the Deferred fires with the
        frame's RESULT.
        """
        stream, proto, transport = self.open(results=True)
        proto.dataReceived(_framed(wire.Welcome(wire.SCAP_DETECT)))
        d = stream.send(JPEG)
        proto.dataReceived(_framed(wire.Ack(0)))
        self.assertNoResult(d)
        result = wire.Result(0, [{"label": "cat"}], 5)
        proto.dataReceived(_framed(result))
        self.assertEqual(self.successResultOf(d), result)

    def test_closeSaysByeAfterAll(self):
        """
        C{close} waits for every frame to be settled, says BYE and fires
        with the summary.
        """
        stream, proto, transport = self.open()
        proto.dataReceived(_framed(wire.Welcome()))
        stream.send(JPEG)
        done = stream.close()
        self.assertNoResult(done)
        proto.dataReceived(_framed(wire.Ack(0)))
        self.assertIsInstance(_sent(transport)[-1], wire.Bye)
        proto.connectionLost(Failure(ConnectionDone()))
        summary = self.successResultOf(done)
        self.assertEqual(summary.acknowledged, 1)
        self.assertRaises(RuntimeError, stream.send, JPEG)

    def test_noOpenCV(self):
        """
        Importing the embedding API does not import OpenCV.
        """
        import subprocess
        import sys

        code = "import sys, imageproto.sender.embed; print('cv2' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual(out.stdout.strip(), "False", out.stderr)
        self.assertIsInstance(FrameStream, type)
