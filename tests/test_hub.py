# -*- test-case-name: tests.test_hub -*-
"""
Tests for L{imageproto.hub}: a real hub (its own reactor in a thread) on a
loopback port, fed by the blocking client from other threads, as a script
would use them.  No global reactor: these are plain synchronous tests.
"""

from __future__ import annotations

import os
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

import imageproto
from imageproto import hub as hubModule
from imageproto.client import ServerRefused
from tests.helpers import makeJpeg

try:
    import cv2  # noqa: F401
except ImportError:  # pragma: no cover
    cv2 = None


def _listen(testCase, **kwargs):
    hub = imageproto.listen("tcp:0:interface=127.0.0.1", **kwargs)
    testCase.addCleanup(hub.close)
    return hub, f"127.0.0.1:{hub.port}"


def _inThread(f, *args):
    """
    Run C{f} in a thread; return a function that joins it and returns
    C{f}'s result (or raises its exception).
    """
    outcome = {}

    def run():
        try:
            outcome["value"] = f(*args)
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join(timeout=20):
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError("the thread did not finish")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return join


class HubTests(SynchronousTestCase):
    """
    L{imageproto.listen} and the frames it yields.
    """

    def test_framesAndReplies(self):
        """
        Iterating the hub yields each frame with its stream, seq, capture
        time and JPEG; C{reply} sends a RESULT tied to the frame, which a
        blocking client waiting on a hub with C{replies=True} gets.
        """
        hub, address = _listen(self, replies=True)
        jpeg = makeJpeg()

        def script():
            with imageproto.connect(address, name="cam", timeout=10) as s:
                return [s.send(jpeg, captureTime=100.0 + i) for i in range(3)]

        join = _inThread(script)
        seen = []
        for frame in hub:
            seen.append(frame)
            frame.reply([{"label": "n", "confidence": 1.0, "box": [0, 0, frame.seq, 1]}])
            if len(seen) == 3:
                break
        replies = join()
        self.assertEqual([(f.stream, f.seq, f.captureTime) for f in seen],
                         [("cam", i, 100.0 + i) for i in range(3)])
        self.assertEqual(seen[0].jpeg, jpeg)
        self.assertIsNone(seen[0].metadata)
        self.assertGreater(seen[0].latency, 0)
        self.assertEqual([r.detections[0]["box"][2] for r in replies], [0, 1, 2])
        self.assertTrue(all(r.detected for r in replies))

    def test_imageAndAnnotatedReply(self):
        """
        C{image()} decodes the frame; C{reply(..., image=array)} sends it
        back JPEG-encoded.
        """
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        hub, address = _listen(self, replies=True)
        jpeg = makeJpeg(64, 48)
        join = _inThread(lambda: imageproto.connect(address, name="a").send(jpeg))
        frame = hub.get(timeout=10)
        image = frame.image()
        self.assertEqual(image.shape, (48, 64, 3))
        frame.reply([], image=image)
        reply = join()
        self.assertEqual(reply.image().shape, (48, 64, 3))

    def test_finiteSenderHeldBack(self):
        """
        A finite sender's frames are acknowledged only once the script has
        taken them: with the script not reading, a client with a window of
        4 gets no answers, and none is lost once it reads.
        """
        hub, address = _listen(self, queueSize=2)
        jpeg = makeJpeg()
        client = imageproto.connect(address, name="file", window=4)
        self.addCleanup(client.close, 1)
        handles = [client.send(jpeg, wait=False) for _ in range(4)]
        # All four reach the hub (its reactor thread reads them in its own
        # time); an ACK sent on arrival would have left for the first frame
        # before the fourth was read, and most likely been read by now.
        deadline = time.monotonic() + 10
        while hub.pending() < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(hub.pending(), 4)
        self.assertEqual([h.done() for h in handles], [False] * 4)
        self.assertEqual([hub.get(timeout=5).seq for _ in range(4)], [0, 1, 2, 3])
        self.assertEqual([h.result(5).seq for h in handles], [0, 1, 2, 3])
        self.assertEqual(hub.dropped, 0)

    def test_liveSenderDropsOldest(self):
        """
        A live sender is acknowledged at once; with the script behind, the
        queue keeps the newest C{queueSize} frames and counts the others as
        dropped.
        """
        hub, address = _listen(self, queueSize=3)
        jpeg = makeJpeg()
        with imageproto.connect(address, name="cam", live=True, window=4) as s:
            for _ in range(10):
                s.send(jpeg)
        deadline = time.monotonic() + 5
        while hub.dropped < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(hub.dropped, 7)
        self.assertEqual([hub.get(timeout=5).seq for _ in range(3)], [7, 8, 9])

    def test_stats(self):
        """
        C{stats()} is the receiver's statistics, with the hub's own counts.
        """
        hub, address = _listen(self)
        with imageproto.connect(address, name="s1", live=True) as s:
            s.send(makeJpeg())
        hub.get(timeout=5)
        stats = hub.stats()
        self.assertEqual(stats["streams"]["s1"]["frames"], 1)
        self.assertEqual(stats["hub"], {"dropped": 0, "pending": 0})

    def test_tokensApply(self):
        """
        With C{tokens=}, a client without a token is refused and one with
        it is accepted.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("a" * 64 + " cam-*\n")
        hub, address = _listen(self, tokens=path)
        with self.assertRaises(ServerRefused):
            imageproto.connect(address, name="cam-1", timeout=2)
        with imageproto.connect(address, name="cam-1", token="a" * 64, live=True) as s:
            s.send(makeJpeg())
        self.assertEqual(hub.get(timeout=5).stream, "cam-1")

    def test_closeEndsIteration(self):
        """
        Closing the hub from another thread ends a waiting iteration, and
        the port is released.
        """
        hub, address = _listen(self)
        join = _inThread(lambda: list(hub))
        time.sleep(0.1)
        hub.close()
        self.assertEqual(join(), [])
        self.assertRaises(hubModule.HubClosed, hub.get, 0)
        self.assertRaises(TimeoutError, imageproto.connect, address, name="x", timeout=0.3)

    def test_saveDirAndStatsFile(self):
        """
        The receiver options apply: frames are saved and the stats file is
        written by the time C{close} returns.
        """
        directory = self.mktemp()
        statsFile = self.mktemp()
        hub, address = _listen(self, saveDir=directory, statsFile=statsFile)
        with imageproto.connect(address, name="saved", live=True) as s:
            s.send(makeJpeg())
        hub.get(timeout=5)
        hub.close()
        self.assertTrue(os.listdir(os.path.join(directory, "saved")))
        self.assertTrue(os.path.exists(statsFile))

    def test_metadata(self):
        """
        A frame's metadata reaches the script.
        """
        hub, address = _listen(self)
        with imageproto.connect(address, name="m", live=True) as s:
            s.send(makeJpeg(), metadata={"msg": "m|1"})
        self.assertEqual(hub.get(timeout=5).metadata, {"msg": "m|1"})


class ConnectingHubTests(SynchronousTestCase):
    """
    A hub that connects out to a listening sender (L{hubModule.Hub.connect}):
    the TCP direction is reversed, the protocol roles are not.
    """

    def setUp(self):
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.addCleanup(self.listener.close)
        self.port = self.listener.getsockname()[1]
        self.hub = imageproto.listen(None)
        self.addCleanup(self.hub.close)

    def accept(self, name="pub"):
        from imageproto.client import Client

        sock, peer = self.listener.accept()
        client = Client(peer, name, live=True, sock=sock, timeout=5)
        self.addCleanup(client.close, timeout=1)
        return client

    def test_receivesFromListeningSender(self):
        """
        The accepted connection's sender says HELLO (the blocking client on
        the accepted socket); its frames reach the hub through the real
        receiver, whose statistics count them.
        """
        self.assertIsNone(self.hub.port)
        self.hub.connect(f"tcp://127.0.0.1:{self.port}")
        client = self.accept()
        self.assertTrue(client.metadata)
        reply = client.send(makeJpeg(), metadata={"msg": "one"})
        self.assertEqual(reply.seq, 0)
        frame = self.hub.get(timeout=5)
        self.assertEqual((frame.stream, frame.metadata), ("pub", {"msg": "one"}))
        self.assertEqual(self.hub.stats()["streams"]["pub"]["frames"], 1)

    def test_reconnectsAfterSenderLeaves(self):
        """
        When the sender goes away the hub connects again, and a sender
        on the accepted socket cannot reconnect by itself.
        """
        from imageproto.client import ClientError

        self.hub.connect(("127.0.0.1", self.port))
        first = self.accept()
        first.send(makeJpeg())
        first._connection.shutdown()  # the connection drops
        error = self.assertRaises(ClientError, first.send, makeJpeg(), timeout=1)
        self.assertIn("not reopened", str(error))
        second = self.accept("pub")
        second.send(makeJpeg())
        self.assertEqual([self.hub.get(timeout=5).stream for _ in range(2)], ["pub", "pub"])

    def test_connectsWhenSenderComesUp(self):
        """
        A hub started before its sender keeps trying until it listens.
        """
        import socket

        self.listener.close()
        self.hub.connect(("127.0.0.1", self.port))
        time.sleep(0.5)
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.listener.settimeout(10)
        self.addCleanup(self.listener.close)
        self.accept().send(makeJpeg())
        self.assertEqual(self.hub.get(timeout=5).stream, "pub")
