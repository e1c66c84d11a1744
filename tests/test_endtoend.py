"""
End-to-end tests: real C{twistd -n imageproto} and C{twistd -n
imageproto-sender} processes on free loopback ports, streaming a video file
the test writes with OpenCV.

Waits poll conditions on the real reactor with a deadline; nothing sleeps.
"""

import json
import os
import signal

from twisted.internet import defer
from twisted.trial.unittest import TestCase

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

from imageproto import wire
from imageproto.tap import freePort, listening, twistdCommand
from imageproto.testing import waitFor
from imageproto.receiver.savedir import metadataPath, savedFrames
from imageproto.sender.results import RESULTS_FILE
from tests.helpers import jpegs
from tests.helpers import SUMMARY, TwistdProcesses

# twistd has no "python -m" entry point ("python -m twisted" is "twist"), so
# run its console-script function under this interpreter.
TWISTD = twistdCommand()
FRAMES = 48
FPS = 16.0








def writeClip(path: str) -> None:
    """
    An MJPG video of FRAMES distinct frames, each with its number drawn.
    """
    jpegs.writeClip(path, FRAMES, fps=FPS)


def encodedClip(path: str) -> list:
    """
    The JPEG bytes the sender produces for each frame of C{path} with its
    default settings: the same OpenCV, the same decoder, the same encoder.
    """
    from imageproto.sender.sources import Encoder, VideoFileSource

    source = VideoFileSource(path)
    source.open()
    encoder = Encoder()
    frames = []
    try:
        while (image := source.read()) is not None:
            frames.append(encoder.encode(image))
    finally:
        source.close()
    return frames


class EndToEndTests(TwistdProcesses, TestCase):
    skip = None if cv2 is not None else "OpenCV (cv2) is not installed"
    timeout = 120

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.saveDir = os.path.join(self.directory, "saved")
        self.clip = os.path.join(self.directory, "clip.avi")
        writeClip(self.clip)
        self.port = freePort()

    @defer.inlineCallbacks
    def startReceiver(self, name="receiver", *extra, port=None):
        port = self.port if port is None else port
        receiver = self.spawn(
            name,
            ["imageproto", "--port", f"tcp:{port}:interface=127.0.0.1", "--save-dir", self.saveDir,
             *extra],
        )
        yield waitFor(
            lambda: receiver.status is not None or listening(port), 30, "the receiver to listen"
        )
        self.assertIsNone(receiver.status, receiver.text)
        return receiver

    def startSender(self, *args):
        return self.spawn(
            "sender",
            ["imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port}", "--max-delay", "0.5", *args],
        )

    def saved(self, stream: str) -> dict:
        return {
            int(os.path.basename(path)[:-4]): path
            for path in savedFrames(self.saveDir, stream)
        }

    @defer.inlineCallbacks
    def test_videoSurvivesReceiverRestart(self):
        """
        A video is delivered whole across a receiver killed (SIGKILL) and
        restarted mid-clip: the saved files are seq 0..N-1, one per video
        frame, each byte for byte the JPEG the sender encoded for that frame;
        the sender reconnected, saw every frame acknowledged, and exited 0.
        """
        receiver = yield self.startReceiver()
        sender = self.startSender("--video", self.clip, "--name", "clip")
        yield waitFor(
            lambda: len(self.saved("clip")) >= FRAMES // 4 or sender.status is not None,
            60,
            "a quarter of the clip to arrive",
        )
        self.assertIsNone(sender.status, "the sender ended before the receiver was killed")
        receiver.transport.signalProcess(signal.SIGKILL)
        yield receiver.ended
        arrivedBeforeKill = len(self.saved("clip"))
        self.assertLess(arrivedBeforeKill, FRAMES, "the clip ended before the kill")
        yield self.startReceiver("receiver2")
        status = yield sender.ended
        self.assertEqual(status, 0, sender.text)

        expected = encodedClip(self.clip)
        self.assertEqual(len(expected), FRAMES)
        saved = self.saved("clip")
        self.assertEqual(sorted(saved), list(range(FRAMES)))
        for seq, path in sorted(saved.items()):
            with open(path, "rb") as f:
                data = f.read()
            self.assertTrue(wire.isJpeg(data), f"frame {seq} is not a JPEG")
            self.assertEqual(data, expected[seq], f"frame {seq} differs from what was sent")

        summary = SUMMARY.search(sender.text)
        self.assertIsNotNone(summary, sender.text)
        self.assertEqual(int(summary["sent"]), FRAMES)
        self.assertEqual(int(summary["acknowledged"]), FRAMES)
        self.assertGreaterEqual(int(summary["reconnects"]), 1)

    @defer.inlineCallbacks
    def test_metadataSavedAndInResults(self):
        """
        C{--metadata} on the sender reaches a real receiver: every saved
        frame has C{<seq>.json} beside it holding that metadata, and the
        sender's C{--results} lines (the receiver runs C{--detect echo})
        carry it too; the sender exits 0.
        """
        yield self.startReceiver("receiver", "--detect", "echo")
        out = os.path.join(self.directory, "results")
        metadata = {"site": "door", "floor": 2, "tags": ["a", "caf\N{LATIN SMALL LETTER E WITH ACUTE}"]}
        sender = self.startSender(
            "--video", self.clip, "--name", "meta", "--fps", "0", "--results", out,
            "--metadata", json.dumps(metadata),
        )
        status = yield sender.ended
        self.assertEqual(status, 0, sender.text)
        self.assertNotIn("does not take per-frame metadata", sender.text)
        saved = self.saved("meta")
        self.assertEqual(sorted(saved), list(range(FRAMES)))
        for seq, path in saved.items():
            with open(metadataPath(path), encoding="utf-8") as f:
                self.assertEqual(json.load(f), metadata, f"sidecar of frame {seq}")
        with open(os.path.join(out, RESULTS_FILE), encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(sorted(line["seq"] for line in lines), list(range(FRAMES)))
        self.assertEqual({json.dumps(line["metadata"]) for line in lines}, {json.dumps(metadata)})

    @defer.inlineCallbacks
    def test_videoFailsOverToSecondReceiver(self):
        """
        A sender given two receivers (--connect twice) that share one
        --save-dir moves to the second when the first is killed (SIGKILL)
        mid-clip and is not restarted: the clip is stored whole, every frame
        once and byte for byte as sent, and the sender exits 0.
        """
        secondPort = freePort()
        first = yield self.startReceiver("receiver", port=self.port)
        yield self.startReceiver("receiver2", port=secondPort)
        sender = self.startSender(
            "--video", self.clip, "--name", "clip",
            "--connect", f"tcp:127.0.0.1:{secondPort}",
        )
        yield waitFor(
            lambda: len(self.saved("clip")) >= FRAMES // 4 or sender.status is not None,
            60,
            "a quarter of the clip to arrive",
        )
        self.assertIsNone(sender.status, "the sender ended before the receiver was killed")
        first.transport.signalProcess(signal.SIGKILL)
        yield first.ended
        self.assertLess(len(self.saved("clip")), FRAMES, "the clip ended before the kill")
        status = yield sender.ended
        self.assertEqual(status, 0, sender.text)
        self.assertRegex(sender.text, rf"streaming 'clip' to \S*:{secondPort} \(connection 2")

        expected = encodedClip(self.clip)
        files = [
            os.path.relpath(path, self.saveDir) for path in savedFrames(self.saveDir, "clip")
        ]
        self.assertEqual(len(files), FRAMES, "a frame is stored twice or not at all")
        saved = self.saved("clip")
        self.assertEqual(sorted(saved), list(range(FRAMES)))
        for seq, path in sorted(saved.items()):
            with open(path, "rb") as f:
                self.assertEqual(f.read(), expected[seq], f"frame {seq} differs from what was sent")
        summary = SUMMARY.search(sender.text)
        self.assertIsNotNone(summary, sender.text)
        self.assertEqual(int(summary["acknowledged"]), FRAMES)
        self.assertGreaterEqual(int(summary["reconnects"]), 1)

    @defer.inlineCallbacks
    def test_refusedSenderExitsNonZero(self):
        """
        A sender the receiver refuses (a name with a path in it) exits
        non-zero, with the server's reason in its output, and nothing is
        saved.
        """
        yield self.startReceiver()
        sender = self.startSender("--video", self.clip, "--name", "../x")
        status = yield sender.ended
        self.assertNotEqual(status, 0, sender.text)
        self.assertIn("refused the stream", sender.text)
        self.assertIn("../x", sender.text)
        self.assertFalse(os.path.exists(os.path.join(self.directory, "x")))

    @defer.inlineCallbacks
    def test_retriesExhaustedExitsNonZero(self):
        """
        With --max-retries and no receiver, the sender gives up and exits
        non-zero, saying why.
        """
        sender = self.startSender("--max-retries", "1", "--count", "5")
        status = yield sender.ended
        self.assertNotEqual(status, 0, sender.text)
        self.assertIn("gave up after 1 retries", sender.text)
