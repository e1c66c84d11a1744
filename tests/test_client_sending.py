"""
Tests for the blocking client's per-frame path: a FRAME's bytes
(L{imageproto.client.frames.framedParts}), their writing in one
C{sendmsg} (L{imageproto.client.connection.sendParts}), and the reader
thread settling the answers one C{recv} brings together.  Over fake sockets
and socket pairs whose server end the test plays: no reactor.
"""

from __future__ import annotations

import math
import socket
import struct
import threading

from twisted.trial.unittest import SynchronousTestCase

from imageproto import client, wire
from imageproto.client import connection, frames
from tests.helpers.wirebytes import FAKE_JPEG


class FramedPartsTests(SynchronousTestCase):
    """
    L{frames.framedParts} lays out the bytes L{wire.encodeFramed} gives.
    """

    def test_sameBytesAsWire(self):
        """
        Joined, the parts are C{wire.encodeFramed} of the same FRAME, with
        and without metadata; the JPEG is the caller's object, not a copy.
        """
        for metadata in (None, '{"a": 1}', '"caf\u00e9"'):
            frame = wire.Frame(7, FAKE_JPEG, 1.5, 2.5, metadata=metadata)
            raw = None if metadata is None else metadata.encode("utf-8")
            parts = frames.framedParts(7, FAKE_JPEG, 1.5, 2.5, raw)
            self.assertEqual(b"".join(parts), wire.encodeFramed(frame))
            self.assertIs(parts[1], FAKE_JPEG)

    def test_tooLong(self):
        """
        A FRAME longer than a length prefix can say raises
        L{wire.WireError}, as C{wire.encodeFramed} does.
        """

        class Huge:
            def __len__(self):
                return 1 << 32

        self.assertRaises(wire.WireError, frames.framedParts, 0, Huge(), 0.0, 0.0)
        self.assertRaises(wire.WireError, frames.framedParts, 0, Huge(), 0.0, 0.0, b"{}")


class _TricklingSocket:
    """
    A socket whose C{sendmsg} takes at most the next of C{limits} bytes a
    call (all of them once C{limits} runs out), as a signal or a timeout
    can make a blocking one do, and then raises C{error} if given.

    @ivar written: the bytes taken, in order.
    @ivar calls: how many buffers each call was given.
    """

    def __init__(self, limits, error=None):
        self.limits = list(limits)
        self.error = error
        self.written = b""
        self.calls = []

    def sendmsg(self, buffers):
        self.calls.append(len(buffers))
        data = b"".join(bytes(b) for b in buffers)
        if self.limits:
            data = data[: self.limits.pop(0)]
        elif self.error is not None:
            raise self.error
        self.written += data
        return len(data)


class SendPartsTests(SynchronousTestCase):
    """
    L{connection.sendParts} writes every byte of its parts, in order, however
    little each C{sendmsg} takes.
    """

    parts = frames.framedParts(3, FAKE_JPEG, 1.0, 2.0)

    def test_whole(self):
        """
        One C{sendmsg} of all the parts when the socket takes them whole.
        """
        sock = _TricklingSocket([])
        connection.sendParts(sock, list(self.parts))
        self.assertEqual(sock.written, b"".join(self.parts))
        self.assertEqual(sock.calls, [3])

    def test_partial(self):
        """
        After a partial send the rest goes from the byte where it stopped:
        within the head, at the end of a part, within the JPEG and within
        the trailer; parts already sent are not given again.
        """
        head, jpeg, trailer = self.parts
        limits = [
            5,
            len(head) - 5,
            1,
            len(jpeg) - 2,
            2,
        ]
        sock = _TricklingSocket(limits)
        connection.sendParts(sock, list(self.parts))
        self.assertEqual(sock.written, b"".join(self.parts))
        self.assertEqual(sock.calls, [3, 3, 2, 2, 2, 1])

    def test_error(self):
        """
        An error from C{sendmsg} reaches the caller, after what was taken.
        """
        sock = _TricklingSocket([4], OSError("gone"))
        self.assertRaises(OSError, connection.sendParts, sock, list(self.parts))
        self.assertEqual(sock.written, b"".join(self.parts)[:4])


class _Peer:
    """
    The server end of a socket pair: a L{client.Client} adopts the other
    end (C{sock=}) after this end has written its WELCOME.
    """

    def __init__(self, test, welcome=None, **options):
        ours, self.sock = socket.socketpair()
        self.sock.sendall(wire.encodeFramed(welcome or wire.Welcome()))
        self.client = client.Client(("peer", 1), "cam", sock=ours, **options)
        test.addCleanup(self.sock.close)
        test.addCleanup(self.client.close, 0)
        self.hello = self.read()

    def read(self):
        return connection.readMessage(self.sock)

    def recordSettled(self) -> list:
        """
        Record the seqs of each call that settles answers together.
        """
        calls = []
        settled = self.client._settled

        def recording(answers):
            calls.append([pending.seq for pending, _ in answers])
            settled(answers)

        self.client._settled = recording
        return calls

    def say(self, *messages):
        """
        Write C{messages} in one C{sendall}.
        """
        self.sock.sendall(b"".join(wire.encodeFramed(m) for m in messages))


class ReaderTests(SynchronousTestCase):
    """
    The reader thread settles each frame with its own answer, settling the
    ACKs one C{recv} brings in one go but never past another message.
    """

    def test_answersTogether(self):
        """
        ACKs, a REJECT among them, and more ACKs written at once: each frame
        gets its own answer, and the ACKs on either side of the REJECT are
        settled in one call each.
        """
        peer = _Peer(self, window=8, timeout=10)
        calls = peer.recordSettled()
        pendings = [peer.client.send(FAKE_JPEG, wait=False) for _ in range(5)]
        self.assertEqual([peer.read().seq for _ in range(5)], list(range(5)))
        peer.say(
            wire.Ack(0), wire.Ack(1), wire.Reject(2, "no"), wire.Ack(3), wire.Ack(4)
        )
        replies = [p.result() for p in pendings[:2] + pendings[3:]]
        self.assertEqual([r.seq for r in replies], [0, 1, 3, 4])
        self.assertEqual({r.detected for r in replies}, {False})
        self.assertTrue(all(r.roundTrip >= 0 for r in replies))
        e = self.assertRaises(client.FrameRejected, pendings[2].result)
        self.assertIn("no", str(e))
        self.assertEqual(calls, [[0, 1], [2], [3, 4]])
        self.assertEqual(peer.client._pending, {})

    def test_acksBeforeAnOversizedMessageSettled(self):
        """
        ACKs read in the same C{recv} as a message over the size limit are
        settled before the connection is given up: their frames are
        answered, not sent again.
        """
        peer = _Peer(self, window=8, timeout=10)
        calls = peer.recordSettled()
        pending = peer.client.send(FAKE_JPEG, wait=False)
        self.assertEqual(peer.read().seq, 0)
        peer.sock.sendall(wire.encodeFramed(wire.Ack(0)) + struct.pack("!I", 2**31))
        self.assertEqual(pending.result().seq, 0)
        self.assertEqual(calls, [[0]])

    def test_unknownAckIgnored(self):
        """
        An ACK for a frame nobody waits for (answered already) changes
        nothing; the frames after it are still answered.
        """
        peer = _Peer(self, timeout=10)
        first = peer.client.send(FAKE_JPEG, wait=False)
        peer.read()
        peer.say(wire.Ack(0), wire.Ack(0), wire.Ack(99))
        self.assertEqual(first.result().seq, 0)
        second = peer.client.send(FAKE_JPEG, wait=False)
        peer.read()
        peer.say(wire.Ack(1))
        self.assertEqual(second.result().seq, 1)


class ThreadTests(SynchronousTestCase):
    """
    Several threads sending and waiting at once share the client's one
    lock and conditions (L{client.PendingFrame}'s state).
    """

    def test_severalWaiters(self):
        """
        Four threads each send 25 frames and wait for each answer, with a
        window of 2, so that writers wait for room while others wait for
        answers: every thread gets the answers to its own frames, and the
        wire carries each seq once, in order.
        """
        peer = _Peer(self, window=2, timeout=30)
        seen = []

        def answer():
            # The server: ACK every FRAME as it comes, until the BYE.
            while True:
                message = peer.read()
                if not isinstance(message, wire.Frame):
                    return
                seen.append(message.seq)
                peer.say(wire.Ack(message.seq))

        server = threading.Thread(target=answer)
        server.start()
        results = {}
        errors = []

        def script(name):
            try:
                results[name] = [
                    (pending.seq, pending.result().seq)
                    for pending in (
                        peer.client.send(FAKE_JPEG, wait=False) for _ in range(25)
                    )
                ]
            except Exception as e:  # pragma: no cover (reported below)
                errors.append(e)

        threads = [threading.Thread(target=script, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peer.client.close()
        server.join()
        self.assertEqual(errors, [])
        self.assertEqual(seen, list(range(100)))
        for pairs in results.values():
            self.assertEqual([a for a, b in pairs], [b for a, b in pairs])
        self.assertEqual(sorted(a for pairs in results.values() for a, _ in pairs), seen)


class FrameFieldTests(SynchronousTestCase):
    """
    What the client puts in a FRAME, checked as C{wire.Frame} checks it
    though the client writes its bytes without one.
    """

    def test_captureTime(self):
        """
        A float capture time travels as it is, an int as a float; one that
        is not finite is refused with C{ValueError} before anything is
        sent; L{client.PendingFrame.frame} is the frame as sent.
        """
        peer = _Peer(self, timeout=10)
        pending = peer.client.send(FAKE_JPEG, wait=False, captureTime=1.25)
        sent = peer.read()
        self.assertEqual((sent.seq, sent.jpeg, sent.captureTime), (0, FAKE_JPEG, 1.25))
        self.assertGreater(sent.sendTime, 0)
        self.assertEqual(pending.frame, sent)
        peer.client.send(FAKE_JPEG, wait=False, captureTime=7)
        sent = peer.read()
        self.assertEqual(sent.captureTime, 7.0)
        self.assertIsInstance(sent.captureTime, float)
        for bad in (math.nan, math.inf):
            self.assertRaises(
                ValueError, peer.client.send, FAKE_JPEG, wait=False, captureTime=bad
            )
        self.assertEqual(sorted(peer.client._pending), [0, 1])

    def test_metadata(self):
        """
        Metadata travels after the trailer to a server that takes it.
        """
        peer = _Peer(self, wire.Welcome(wire.SCAP_METADATA), timeout=10)
        pending = peer.client.send(
            FAKE_JPEG, wait=False, captureTime=3.0, metadata={"msg": "caf\u00e9"}
        )
        sent = peer.read()
        self.assertEqual(wire.decodeMetadata(sent.metadata), {"msg": "caf\u00e9"})
        self.assertEqual(pending.frame, sent)
