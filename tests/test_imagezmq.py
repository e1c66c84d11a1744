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

from twisted.trial.unittest import SynchronousTestCase

from imageproto import imagezmq

try:
    import cv2  # noqa: F401
except ImportError:  # pragma: no cover
    cv2 = None

SCRIPTS = os.path.join(os.path.dirname(__file__), "imagezmq_scripts")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptTests(SynchronousTestCase):
    """
    A hub script and a sender script, as separate processes.
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
        return None at once, and the hub gets (the newest of) them.
        """
        hub = self.startHub(3, "pubsub")
        sender = self.start("send_images.py", self.port, "40", "cam-pub", "pubsub")
        sent = self.finish(sender)
        self.assertEqual(sent[:2], ["sent 0 None", "sent 1 None"])
        got = self.finish(hub)
        self.assertEqual([line.split()[0] for line in got[:3]], ["cam-pub"] * 3)

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


class AddressTests(SynchronousTestCase):
    """
    imagezmq's addresses.
    """

    def test_senderMustDial(self):
        """
        A sender given a bind address (imagezmq's PUB side) is told that
        imageproto senders connect to the hub.
        """
        error = self.assertRaises(ValueError, imagezmq.ImageSender, "tcp://*:5555", REQ_REP=False)
        self.assertIn("connect to the hub", str(error))

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
