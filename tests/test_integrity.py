"""
Nothing acknowledged is lost or overwritten, and nothing is counted twice:
real C{twistd} receiver and sender processes on loopback, as an operator
meets them (a camera that reboots, a clip sent again after a crash, a disk
that fills).
"""

import json
import os
import shutil
import signal
import subprocess

from twisted.internet import defer
from twisted.trial.unittest import TestCase

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

from imageproto.receiver.savedir import savedFrames
from imageproto.tap import freePort, listening
from imageproto.testing import waitFor
from tests.helpers import TwistdProcesses
from tests.helpers.jpegs import writeClip as _writeClip


def writeClip(path: str, frames: int, size=(160, 120)) -> None:
    _writeClip(path, frames, size, fps=20.0, noise=True)


class IntegrityTests(TwistdProcesses, TestCase):
    skip = None if cv2 is not None else "OpenCV (cv2) is not installed"
    timeout = 180

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.saveDir = os.path.join(self.directory, "saved")
        self.statsFile = os.path.join(self.directory, "stats.json")
        self.port = freePort()

    @defer.inlineCallbacks
    def startReceiver(self, name="receiver", saveDir=None):
        receiver = self.spawn(
            name,
            [
                "imageproto",
                "--port",
                f"tcp:{self.port}:interface=127.0.0.1",
                "--save-dir",
                saveDir or self.saveDir,
                "--stats-file",
                self.statsFile,
            ],
        )
        yield waitFor(
            lambda: receiver.status is not None or listening(self.port), 30, "the receiver to listen"
        )
        self.assertIsNone(receiver.status, receiver.text)
        return receiver

    def startSender(self, name, *args):
        return self.spawn(
            name,
            ["imageproto-sender", "--connect", f"tcp:127.0.0.1:{self.port}", "--max-delay", "0.3",
             *args],
        )

    def stats(self, stream):
        try:
            with open(self.statsFile) as f:
                return json.load(f)["streams"].get(stream)
        except (OSError, ValueError, KeyError):
            return None

    @defer.inlineCallbacks
    def test_cameraRestartKeepsBothRuns(self):
        """
        A camera that restarts (a second sender process under the same
        name, numbering from 0 again) does not overwrite the first run's
        frames: both runs are on disk, the first run's listed first, and
        the statistics count as many frames as are on disk.
        """
        receiver = yield self.startReceiver()
        for run in ("first", "second"):
            sender = self.startSender(run, "--name", "door", "--count", "15", "--fps", "30")
            status = yield sender.ended
            self.assertEqual(status, 0, sender.text)
        paths = savedFrames(self.saveDir, "door")
        self.assertEqual(len(paths), 30)
        folders = sorted(os.listdir(os.path.join(self.saveDir, "door")))
        self.assertEqual(len(folders), 2)
        self.assertEqual([os.path.basename(os.path.dirname(p)) for p in paths],
                         [folders[0]] * 15 + [folders[1]] * 15)
        receiver.transport.signalProcess(signal.SIGTERM)
        yield receiver.ended
        self.assertEqual(self.stats("door")["frames"], 30)

    @defer.inlineCallbacks
    def rerunAfterKill(self, restartReceiver: bool):
        frames = 60
        clip = os.path.join(self.directory, "clip.avi")
        writeClip(clip, frames)
        receiver = yield self.startReceiver()
        first = self.startSender("first", "--video", clip, "--name", "clip", "--fps", "30")
        yield waitFor(
            lambda: len(savedFrames(self.saveDir, "clip")) >= frames // 3 or first.status is not None,
            60,
            "a third of the clip",
        )
        self.assertIsNone(first.status, first.text)
        first.transport.signalProcess(signal.SIGKILL)
        yield first.ended
        if restartReceiver:
            receiver.transport.signalProcess(signal.SIGKILL)
            yield receiver.ended
            receiver = yield self.startReceiver("receiver2")
        second = self.startSender("second", "--video", clip, "--name", "clip", "--fps", "0")
        status = yield second.ended
        self.assertEqual(status, 0, second.text)
        paths = savedFrames(self.saveDir, "clip")
        self.assertEqual([int(os.path.basename(p)[:-4]) for p in paths], list(range(frames)))
        self.assertEqual(len(os.listdir(os.path.join(self.saveDir, "clip"))), 1)
        receiver.transport.signalProcess(signal.SIGTERM)
        yield receiver.ended
        return first, second

    @defer.inlineCallbacks
    def test_rerunAfterCrashContinues(self):
        """
        The same clip sent again under the same name after the sender was
        killed goes on where it stopped: every frame is stored once, in one
        session folder, the receiver counts each frame once, and the second
        run skipped what the receiver already held.
        """
        first, second = yield self.rerunAfterKill(restartReceiver=False)
        self.assertEqual(self.stats("clip")["frames"], 60)
        self.assertIn("skipped (already on the receiver)", second.text)
        self.assertNotIn(" 0 skipped (already", second.text)

    @defer.inlineCallbacks
    def test_rerunAfterReceiverRestartStoresOnce(self):
        """
        With the receiver restarted in between too, frames already on disk
        are recognised: stored once, and the new receiver counts them as
        duplicates, not as frames.
        """
        yield self.rerunAfterKill(restartReceiver=True)
        stats = self.stats("clip")
        self.assertEqual(stats["frames"] + stats["duplicates"], 60)
        self.assertGreater(stats["duplicates"], 0)

    def smallDisk(self, size: str = "600k") -> str:
        """
        A tmpfs of C{size}, unmounted at cleanup (needs root, as CI has).
        """
        mount = os.path.join(self.directory, "disk")
        os.makedirs(mount)
        try:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            raise self.skipTest(f"cannot mount a small tmpfs to fill (needs root): {e}")
        self.addCleanup(subprocess.run, ["umount", "-l", mount], check=False)
        return mount

    @defer.inlineCallbacks
    def test_fullDiskFailsTheSender(self):
        """
        On a full disk the receiver acknowledges only the frames it stored,
        counts the others (rejected, storage_errors), and the finite sender,
        told the condition is temporary, retries, then gives up and exits
        non-zero saying how many frames were not stored.
        """
        disk = self.smallDisk()
        clip = os.path.join(self.directory, "clip.avi")
        writeClip(clip, 40, size=(320, 240))
        receiver = yield self.startReceiver(saveDir=disk)
        sender = self.startSender(
            "sender", "--video", clip, "--name", "clip", "--fps", "0", "--retry-for", "2"
        )
        status = yield sender.ended
        self.assertNotEqual(status, 0, sender.text)
        self.assertRegex(sender.text, r"\d+ of 40 frames were not stored")
        self.assertIn("No space left on device", sender.text)
        self.assertNotIn("sender 'clip' done", sender.text)
        receiver.transport.signalProcess(signal.SIGTERM)
        yield receiver.ended
        stats = self.stats("clip")
        stored = len(savedFrames(disk, "clip"))
        self.assertEqual(stats["frames"], stored)
        self.assertGreater(stats["storage_errors"], 0)
        self.assertEqual(stats["rejected"], stats["storage_errors"])
        # Logged once per episode: again only after frames were stored in
        # between (the space a failed write frees can take a smaller frame,
        # more often the more frames are written at once).
        episodes = receiver.text.split("cannot store frame")
        self.assertGreater(len(episodes), 1, receiver.text)
        for between in episodes[1:-1]:
            self.assertIn("storing frames in", between, receiver.text)

    @defer.inlineCallbacks
    def test_storingResumesWhenSpaceReturns(self):
        """
        When space returns, storing resumes by itself: a sender that kept
        retrying delivers the whole clip and exits 0.
        """
        disk = self.smallDisk()
        ballast = os.path.join(disk, "ballast")
        with open(ballast, "wb") as f:
            try:
                f.write(b"\0" * (600 * 1024))
            except OSError:
                pass
        clip = os.path.join(self.directory, "clip.avi")
        writeClip(clip, 20)
        receiver = yield self.startReceiver(saveDir=disk)
        sender = self.startSender(
            "sender", "--video", clip, "--name", "clip", "--fps", "0", "--retry-for", "60"
        )
        yield waitFor(
            lambda: (self.stats("clip") or {}).get("storage_errors", 0) > 0 or sender.status is not None,
            60,
            "storage errors",
        )
        self.assertIsNone(sender.status, sender.text)
        os.unlink(ballast)
        status = yield sender.ended
        self.assertEqual(status, 0, sender.text)
        self.assertEqual(len(savedFrames(disk, "clip")), 20)
        receiver.transport.signalProcess(signal.SIGTERM)
        yield receiver.ended
        self.assertIn("storing frames in", receiver.text)
        shutil.rmtree(os.path.join(disk, "clip"), ignore_errors=True)
