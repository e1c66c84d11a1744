# -*- test-case-name: tests.test_imagezmq -*-
"""
Tests for L{imageproto.imagezmq}: imagezmq-style scripts (a hub script
and a sender script, in C{tests/imagezmq_scripts/}, written the way
imagezmq's own examples use its API, with only the import line changed)
run as real processes against each other on loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from imageproto import imagezmq

try:
    import cv2  # noqa: F401
    import numpy as np
except ImportError:  # pragma: no cover
    cv2 = None

SCRIPTS = os.path.join(os.path.dirname(__file__), "imagezmq_scripts")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Scripts(SynchronousTestCase):
    """
    Runs the scripts in C{tests/imagezmq_scripts/} as processes.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        self.port = str(_freePort())

    def start(self, script, *args):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        process = subprocess.Popen(
            [sys.executable, os.path.join(SCRIPTS, script), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.addCleanup(self._stop, process)
        return process

    def _stop(self, process):
        if process.poll() is None:
            process.kill()
        process.wait(5)
        process.stdout.close()
        process.stderr.close()

    def startHub(self, count, *flags):
        hub = self.start("hub_images.py", self.port, str(count), *flags)
        line = hub.stdout.readline()
        self.assertEqual(line.strip(), "READY", hub.stderr.read() if not line else line)
        return hub

    def finish(self, process, timeout=30):
        out, err = process.communicate(timeout=timeout)
        self.assertEqual(process.returncode, 0, err)
        return out.splitlines()


class ScriptTests(_Scripts):
    """
    A hub script and a sender script, as separate processes.
    """

    def test_reqRepImages(self):
        """
        test_1-style scripts: C{send_image(name, image)} returns the hub's
        C{b'OK'} for each frame; C{recv_image()} gives the name and the
        decoded 400x400 picture (JPEG: the green line is near 255).
        """
        hub = self.startHub(5)
        sender = self.start("send_images.py", self.port, "5", "rpi-1")
        sent = self.finish(sender)
        got = self.finish(hub)
        self.assertEqual(sent, [f"sent {i} b'OK'" for i in range(5)] + ["DONE"])
        self.assertEqual(len(got), 6)
        for line in got[:5]:
            name, width, height, green = line.split()
            self.assertEqual((name, width, height), ("rpi-1", "400", "400"))
            self.assertGreater(int(green), 200)

    def test_reqRepJpg(self):
        """
        with_ImageSender/with_ImageHub-style scripts: C{cv2.imencode}'s
        array goes to C{send_jpg}, and C{recv_jpg}'s bytes decode with
        C{np.frombuffer} and C{cv2.imdecode}.
        """
        hub = self.startHub(3, "jpg")
        sender = self.start("send_images.py", self.port, "3", "rpi-2", "jpg")
        self.assertEqual(self.finish(sender)[-1], "DONE")
        got = self.finish(hub)
        self.assertEqual([line.split()[:3] for line in got[:3]], [["rpi-2", "400", "400"]] * 3)

    def test_pubSubNeverBlocks(self):
        """
        With C{REQ_REP=False} the sender never waits for the hub: sends
        return None at once, and the hub gets (the newest of) them.  (Both
        given C{tcp://127.0.0.1:PORT}, they behave as imagezmq's do: the
        sender binds and the hub connects to it.)
        """
        hub = self.startHub(3, "pubsub")
        # A publisher's frames before the hub has connected are lost, as
        # with imagezmq: send for long enough (4 s) for it to connect.
        sender = self.start("send_images.py", self.port, "200", "cam-pub", "pubsub")
        sent = self.finish(sender)
        self.assertEqual(sent[:2], ["sent 0 None", "sent 1 None"])
        got = self.finish(hub)
        self.assertEqual([line.split()[0] for line in got[:3]], ["cam-pub"] * 3)

    def test_pubSubSenderDialsListeningHub(self):
        """
        The drop-in's own PUB/SUB direction still works: a hub that listens
        on C{tcp://*:PORT} gets the frames of a C{REQ_REP=False} sender
        given its address (the port is taken, so the sender dials it
        rather than binding).
        """
        hub = self.startHub(3, "pubsub", "wildcard")
        sender = self.start("send_images.py", self.port, "40", "cam-dial", "pubsub")
        sent = self.finish(sender)
        self.assertEqual(sent[:2], ["sent 0 None", "sent 1 None"])
        got = self.finish(hub)
        self.assertEqual([line.split()[0] for line in got[:3]], ["cam-dial"] * 3)

    def test_perFrameMessages(self):
        """
        A per-frame msg ("name|index|time") reaches the hub exactly, as frame
        metadata.
        """
        hub = self.startHub(3)
        sender = self.start("send_images.py", self.port, "3", "rpi|{i}|{t}")
        self.finish(sender)
        got = self.finish(hub)
        self.assertEqual([line.split()[0].split("|")[:2] for line in got[:3]],
                         [["rpi", str(i)] for i in range(3)])

    def test_nonNameMessage(self):
        """
        test_1's msg 'From Sender' is not a stream name; it reaches the hub
        exactly as metadata.
        """
        hub = self.startHub(2)
        sender = self.start("send_images.py", self.port, "2", "From Sender")
        self.finish(sender)
        got = self.finish(hub)
        self.assertEqual([line.rsplit(" ", 3)[0] for line in got[:2]], ["From Sender"] * 2)


class PubSubScriptTests(_Scripts):
    """
    imagezmq's own PUB/SUB direction, as its examples
    (test_pub_send_num_images.py, test_sub_receive_num_images.py,
    pub_sub_broadcast.py, pub_sub_receive.py) use it: the sender binds
    C{tcp://*:PORT}, hubs connect to C{tcp://HOST:PORT}.  Over imageproto
    the publisher is still the protocol's sender (it says HELLO on each
    accepted connection) and each hub the receiver.
    """

    def publish(self, count, msg="pub|{i}", *args):
        return self.start("pub_images.py", self.port, str(count), msg, *args)

    def subscribe(self, count, *flags):
        sub = self.start("sub_images.py", self.port, str(count), *flags)
        line = sub.stdout.readline()
        self.assertEqual(line.strip(), "READY", sub.stderr.read() if not line else line)
        return sub

    def readUntil(self, process, done, timeout=30):
        """
        Lines from C{process} up to the first for which C{done} is true;
        the process is killed if it does not come within C{timeout}.
        """
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        lines = []
        try:
            for line in process.stdout:
                lines.append(line.strip())
                if done(lines[-1]):
                    return lines
        finally:
            timer.cancel()
        self.fail(f"no such line; got {lines}: {process.stderr.read()}")

    def checkFrames(self, lines, prefix="pub"):
        """
        Frames with msgs C{prefix|i}, in order, the 400x400 test picture.
        """
        indices = []
        for line in lines:
            msg, width, height, green = line.split()
            name, index = msg.split("|")
            self.assertEqual((name, width, height), (prefix, "400", "400"))
            self.assertGreater(int(green), 200)
            indices.append(int(index))
        self.assertEqual(indices, sorted(set(indices)))
        return indices

    def test_publisherBindsSubscriberConnects(self):
        """
        The publisher binds C{tcp://*:PORT} and a hub started later
        connects to it and gets its frames from then on (PUB semantics:
        the frames before it connected are missed); C{send_image} returns
        C{None} at once.
        """
        pub = self.publish(250)
        self.assertEqual(pub.stdout.readline().strip(), "sent 0 None")
        sub = self.subscribe(5)
        got = self.finish(sub)
        self.assertEqual(got[-1], "DONE")
        indices = self.checkFrames(got[:5])
        self.assertGreater(indices[0], 0)
        self.assertEqual(self.finish(pub)[-1], "DONE")

    def test_twoSubscribers(self):
        """
        Two hubs connect to one publisher; each gets its frames.
        """
        pub = self.publish(250, "pub|{i}", "0.02", "jpg")
        first = self.subscribe(5)
        second = self.subscribe(5, "jpg")
        for sub in (first, second):
            got = self.finish(sub)
            self.assertEqual(got[-1], "DONE")
            self.checkFrames(got[:5])
        self.assertEqual(self.finish(pub)[-1], "DONE")

    def test_subscriberBeforePublisher(self):
        """
        A hub started before its publisher keeps trying, and gets frames
        once the publisher is up; pub_sub_receive.py's receiving thread
        works too.
        """
        sub = self.subscribe(5, "thread")
        time.sleep(1.0)
        pub = self.publish(250)
        got = self.finish(sub)
        self.assertEqual(got[-1], "DONE")
        self.checkFrames(got[:5])
        self.assertEqual(self.finish(pub)[-1], "DONE")

    def test_publisherRestarts(self):
        """
        A hub whose publisher stops connects again to the next publisher
        on that port.
        """
        sub = self.subscribe(0)
        first = self.publish(100, "first|{i}")
        self.readUntil(sub, lambda line: line.startswith("first|"))
        self.assertEqual(self.finish(first)[-1], "DONE")
        second = self.publish(250, "second|{i}")
        self.readUntil(sub, lambda line: line.startswith("second|"))
        self.finish(second)


class PublisherTests(SynchronousTestCase):
    """
    A binding PUB/SUB sender and connecting hubs in one process.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("cv2 is not installed")
        self.port = _freePort()
        self.sender = imagezmq.ImageSender(f"tcp://*:{self.port}", REQ_REP=False)
        self.addCleanup(self.sender.close)

    def stalledSubscriber(self):
        """
        A hub that finishes the handshake, then never reads again.
        """
        from imageproto import wire
        from imageproto.client.connection import readMessage

        sock = socket.create_connection(("127.0.0.1", self.port))
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        done = threading.Event()

        def handshake():
            hello = readMessage(sock)
            assert isinstance(hello, wire.Hello), hello
            sock.sendall(wire.encodeFramed(wire.Welcome(wire.SCAP_METADATA)))
            done.set()

        threading.Thread(target=handshake, daemon=True).start()
        self.stalledPeer = sock.getsockname()[:2]
        return done

    def test_hangUpBeforeHello(self):
        """
        A hub that connects and gives up before the first frame (so before
        HELLO, which names the stream after the first C{msg}) is
        forgotten, not kept as a dead subscriber; the next one gets the
        stream named after C{msg}.
        """
        raw = socket.create_connection(("127.0.0.1", self.port))
        publisher = self.sender.publisher
        deadline = time.monotonic() + 5
        while not publisher.subscribers and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(len(publisher.subscribers), 1)
        raw.close()
        while publisher.subscribers and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(publisher.subscribers, [])
        hub = imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{self.port}", REQ_REP=False)
        self.addCleanup(hub.close)
        while not publisher.subscribers and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        image = np.zeros((64, 64, 3), dtype="uint8")
        self.sender.send_image("rpi-1", image)
        msg, got = hub.recv_image()
        self.assertEqual((msg, got.shape), ("rpi-1", (64, 64, 3)))
        self.assertIn("rpi-1", hub.hub.stats()["streams"])

    def test_hubConnectsToSeveralPublishers(self):
        """
        C{hub.connect(address)} subscribes to another publisher, as in
        imagezmq's t2_recv_images_via_sub.py: frames of both reach the hub.
        """
        otherPort = _freePort()
        other = imagezmq.ImageSender(f"tcp://*:{otherPort}", REQ_REP=False)
        self.addCleanup(other.close)
        hub = imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{self.port}", REQ_REP=False)
        self.addCleanup(hub.close)
        hub.connect(f"tcp://127.0.0.1:{otherPort}")
        image = np.zeros((64, 64, 3), dtype="uint8")
        seen = set()
        deadline = time.monotonic() + 15
        while seen != {"one", "two"} and time.monotonic() < deadline:
            self.sender.send_image("one", image)
            other.send_image("two", image)
            try:
                while True:
                    frame = hub.hub.get(timeout=0.1)
                    seen.add(imagezmq.msgFrom(frame.metadata, frame.stream))
            except TimeoutError:
                pass
        self.assertEqual(seen, {"one", "two"})

    def test_stalledSubscriberNeverBlocksPublisher(self):
        """
        A hub that stops reading costs the publisher nothing: every
        C{send_image} returns without waiting for it, and another hub keeps getting the
        frames, through the real receiver (its statistics count them).
        """
        welcomed = self.stalledSubscriber()
        hub = imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{self.port}", REQ_REP=False)
        self.addCleanup(hub.close)
        image = np.random.randint(0, 255, (480, 640, 3), dtype="uint8")  # large JPEGs
        deadline = time.monotonic() + 10
        while len(self.sender.publisher.subscribers) < 2 and time.monotonic() < deadline:
            self.sender.send_image("cam", image)  # publishes once hubs are there
            time.sleep(0.05)
        slowest = 0.0
        for i in range(100):
            started = time.monotonic()
            self.assertIsNone(self.sender.send_image(f"cam|{i}", image))
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.01)
        self.assertTrue(welcomed.is_set())
        # Blocked on the stalled hub, a send would wait as long as it
        # stalls, the rest of this test; encoding a noise JPEG on a loaded
        # machine takes a fraction of a second.
        self.assertLess(slowest, 3.0)
        msgs = []
        while True:
            try:
                frame = hub.hub.get(timeout=2)
            except TimeoutError:
                break
            msgs.append(imagezmq.msgFrom(frame.metadata, frame.stream))
        self.assertIn("cam|99", msgs)
        stats = hub.hub.stats()
        self.assertGreaterEqual(stats["streams"][self.sender._name]["frames"], len(msgs))
        [stalled] = [s for s in self.sender.publisher.subscribers if s.peer == self.stalledPeer]
        self.assertGreater(stalled.dropped, 50)


class AddressTests(SynchronousTestCase):
    """
    imagezmq's addresses.
    """

    def test_reqSenderMustDial(self):
        """
        A REQ_REP sender given a bind address is told that it connects to
        the hub (only imagezmq's PUB sender binds).
        """
        error = self.assertRaises(ValueError, imagezmq.ImageSender, "tcp://*:5555", REQ_REP=True)
        self.assertIn("connects to the hub", str(error))

    def test_pubSenderBinds(self):
        """
        A PUB/SUB sender given C{tcp://*:PORT} listens there (imagezmq's
        PUB socket binds); one given the address of a port a hub already
        listens on dials that hub instead.
        """
        port = _freePort()
        sender = imagezmq.ImageSender(f"tcp://*:{port}", REQ_REP=False)
        self.addCleanup(sender.close)
        self.assertEqual(sender.publisher.port, port)
        dialer = imagezmq.ImageSender(f"tcp://127.0.0.1:{port}", REQ_REP=False)
        self.addCleanup(dialer.close)
        self.assertIsNone(dialer.publisher)

    def test_bindingTakesPlainTcp(self):
        """
        A binding sender cannot do TLS: C{tcp://*:PORT} with TLS options
        raises rather than silently sending in the clear.
        """
        error = self.assertRaises(
            ValueError, imagezmq.ImageSender, "tcp://*:5555", REQ_REP=False, ca="ca.pem"
        )
        self.assertIn("plain TCP", str(error))

    def test_hubDirection(self):
        """
        C{tcp://*:PORT} always listens; with C{REQ_REP=False} any other
        address is a publisher to connect to (imagezmq's SUB socket).
        """
        self.assertTrue(imagezmq.ImageHub._wildcard("tcp://*:5555"))
        self.assertTrue(imagezmq.ImageHub._wildcard("tcp://0.0.0.0:5555"))
        self.assertFalse(imagezmq.ImageHub._wildcard("tcp://192.168.1.2:5555"))

    def test_hubEndpoint(self):
        """
        C{tcp://*:PORT} listens everywhere; C{tcp://ADDRESS:PORT} on that
        interface.
        """
        self.assertEqual(imagezmq.ImageHub._endpoint("tcp://*:5555"), "tcp:5555")
        self.assertEqual(
            imagezmq.ImageHub._endpoint("tcp://127.0.0.1:5555"), "tcp:5555:interface=127.0.0.1"
        )

    def test_msgFromMetadata(self):
        """
        C{msg} comes from the frame's metadata, else the stream name.
        """
        self.assertEqual(imagezmq.msgFrom(imagezmq.metadataFor("a|1"), "s"), "a|1")
        self.assertEqual(imagezmq.msgFrom(None, "s"), "s")
