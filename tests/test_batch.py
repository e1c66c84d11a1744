"""
End-to-end detection through real processes: C{twistd -n imageproto
--detect ...} and C{twistd -n imageproto-sender --images DIR --results OUT}
on a free loopback port, plus the compatibility ports and the start-up
error for a missing model.  Waits poll on the real reactor; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from imageproto.tap import freePort, listening
from imageproto.testing import waitFor
from tests.helpers import TwistdProcesses

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None

DATA = os.path.join(os.path.dirname(__file__), "data")


class BatchTests(TwistdProcesses, TestCase):
    skip = None if cv2 is not None else "OpenCV (cv2) is not installed"
    timeout = 120

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.images = os.path.join(self.directory, "images")
        os.makedirs(self.images)
        shutil.copy(os.path.join(DATA, "astronaut.jpg"), self.images)
        shutil.copy(os.path.join(DATA, "chelsea.jpg"), self.images)
        # A PNG, so that one result is named "<name>.jpg".
        cv2.imwrite(
            os.path.join(self.images, "portrait.png"),
            cv2.imread(os.path.join(DATA, "astronaut.jpg")),
        )
        with open(os.path.join(self.images, "broken.jpg"), "wb") as f:
            f.write(b"this is not an image")
        self.out = os.path.join(self.directory, "out")
        self.port = freePort()

    @defer.inlineCallbacks
    def startReceiver(self, *args, ports=()):
        receiver = self.spawn(
            "receiver",
            ["imageproto", "--port", f"tcp:{self.port}:interface=127.0.0.1", *args],
        )
        for port in (self.port, *ports):
            yield waitFor(
                lambda: receiver.status is not None or listening(port),
                30,
                "the receiver to listen",
            )
        self.assertIsNone(receiver.status, receiver.text)
        return receiver

    @defer.inlineCallbacks
    def test_imageFolderBatch(self):
        """
        A folder of images goes through C{--detect faces --reply annotated}
        in one batch run: the sender exits 0; results.jsonl has one line
        per readable image, named, with a round trip; the astronaut photos
        have a face where it is; every readable image has its marked-up
        JPEG; the unreadable file is reported by name and skipped.
        """
        yield self.startReceiver("--detect", "faces", "--reply", "annotated", "--workers", "2")
        sender = self.spawn(
            "sender",
            [
                "imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port}",
                "--images", self.images, "--results", self.out, "--name", "batch",
                "--window", "4",
            ],
        )
        status = yield sender.ended
        self.assertEqual(status, 0, sender.text)
        with open(os.path.join(self.out, "results.jsonl")) as f:
            records = {r["image"]: r for r in map(json.loads, f)}
        self.assertEqual(
            sorted(records), ["astronaut.jpg", "chelsea.jpg", "portrait.png"]
        )
        for name in ("astronaut.jpg", "portrait.png"):
            (face,) = records[name]["detections"]
            x, y, w, h = face["box"]
            self.assertEqual(face["label"], "face")
            self.assertTrue(90 <= x + w / 2 <= 140 and 30 <= y + h / 2 <= 95, face)
        self.assertEqual(records["chelsea.jpg"]["detections"], [])
        for record in records.values():
            self.assertEqual(record["stream"], "batch")
            self.assertGreater(record["roundTripMs"], 0)
            annotated = cv2.imread(os.path.join(self.out, record["annotated"]))
            original = cv2.imread(os.path.join(self.images, record["image"]))
            self.assertEqual(annotated.shape, original.shape)
        self.assertTrue(os.path.exists(os.path.join(self.out, "portrait.png.jpg")))
        self.assertIn("broken.jpg", sender.text)
        with open(os.path.join(self.out, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual((summary["frames"], summary["results"]), (3, 3))
        self.assertEqual(summary["unreadable"], ["broken.jpg"])

    @defer.inlineCallbacks
    def test_missingModelStopsTheReceiver(self):
        """
        C{--detect onnx:PATH} with a missing file makes twistd exit non-zero
        at start, naming the file, without ever listening.
        """
        missing = os.path.join(self.directory, "nope.onnx")
        receiver = self.spawn(
            "receiver",
            ["imageproto", "--port", f"tcp:{self.port}:interface=127.0.0.1",
             "--detect", "onnx:" + missing],
        )
        status = yield receiver.ended
        self.assertNotEqual(status, 0)
        self.assertIn(missing, receiver.text)
        self.assertFalse(listening(self.port))

    @defer.inlineCallbacks
    def test_compatLE32(self):
        """
        A hand-written client on C{--compat-le32} sends one JPEG and reads
        back the marked-up JPEG in the same framing, with the face box drawn
        (so it differs from what was sent but has the same size).
        """
        compatPort = freePort()
        yield self.startReceiver(
            "--detect", "faces", "--compat-le32", f"tcp:{compatPort}:interface=127.0.0.1",
            ports=(compatPort,),
        )
        with open(os.path.join(DATA, "astronaut.jpg"), "rb") as f:
            jpeg = f.read()

        def client():
            with socket.create_connection(("127.0.0.1", compatPort), timeout=30) as s:
                s.sendall(struct.pack("<I", len(jpeg)) + jpeg)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data

        answer = yield deferToThread(client)
        (size,) = struct.unpack("<I", answer[:4])
        self.assertEqual(size, len(answer) - 4)
        self.assertNotEqual(answer[4:], jpeg)
        image = cv2.imdecode(numpy.frombuffer(answer[4:], numpy.uint8), cv2.IMREAD_COLOR)
        self.assertEqual(image.shape, (256, 256, 3))
