"""
Tests for L{imageproto.receiver.savedir}: what the receiver acknowledged
stays on disk, in capture order, and a failure to store is a failure.
"""

import errno
import json
import os

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from imageproto import wire
from imageproto.receiver.pipeline import ALREADY_STORED, IFrameConsumer, ReceivedFrame
from imageproto.receiver.savedir import SaveDirSink, framePath, metadataPath, sessionFolder
from imageproto.testing import FakeThreadRunner
from tests.helpers import FAKE_JPEG, RecordingChannel, receiverStack, savedFrames


def received(stream="cam", seq=0, session=1, when=1700000000.25, jpeg=FAKE_JPEG, metadata=None):
    return ReceivedFrame(
        stream, seq, when, when, when, jpeg, 0, False, session, metadata=metadata
    )


class LayoutTests(SynchronousTestCase):
    def test_sessionFolder(self):
        """
        A session's folder is named for its first receipt in UTC, to the
        microsecond, then the session in 16 hex digits.
        """
        self.assertEqual(
            sessionFolder(1700000000.25, 0xABC), "20231114T221320.250000Z-0000000000000abc"
        )

    def test_framePath(self):
        """
        Frames go to C{DIR/<stream>/<session folder>/<seq, 8 digits>.jpg}.
        """
        self.assertEqual(
            framePath("/d", "cam-1", "F", 42), os.path.join("/d", "cam-1", "F", "00000042.jpg")
        )


class SaveDirSinkTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        self.threads = FakeThreadRunner()
        self.sink = SaveDirSink(self.directory, self.threads)

    def store(self, frame):
        d = self.sink.frameReceived(frame)
        self.threads.runAll()
        return d

    def test_interface(self):
        """
        L{SaveDirSink} provides L{IFrameConsumer}.
        """
        self.assertTrue(verifyObject(IFrameConsumer, self.sink))

    def test_writesExactBytesInThread(self):
        """
        The frame's bytes are written, unchanged, by the worker thread; the
        returned Deferred (the ACK) waits for the write.
        """
        data = b"\xff\xd8\xff" + bytes(range(256)) * 10 + b"\xff\xd9"
        d = self.sink.frameReceived(received(seq=7, jpeg=data))
        self.assertNoResult(d)
        self.assertEqual(savedFrames(self.directory, "cam"), [])
        self.threads.runAll()
        self.assertIsNone(self.successResultOf(d))
        [path] = savedFrames(self.directory, "cam")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["00000007.jpg"])

    def test_metadataSidecar(self):
        """
        A frame with metadata gets C{<seq>.json} beside C{<seq>.jpg}: one
        line of JSON, keys in the sender's order; written before the JPEG,
        both before the ACK.  A frame without metadata gets no sidecar.
        """
        from imageproto.receiver import savedir

        written = []

        def recorded(write):
            def recording(path, *args, **kwargs):
                written.append(path)
                return write(path, *args, **kwargs)

            return recording

        for name in ("writeJsonAtomically", "writeBytesAtomically"):
            self.patch(savedir, name, recorded(getattr(savedir, name)))
        metadata = {"z": 1, "site": "caf\N{LATIN SMALL LETTER E WITH ACUTE}", "tags": ["a", "b"]}
        d = self.sink.frameReceived(received(seq=3, metadata=metadata))
        self.assertNoResult(d)
        self.threads.runAll()
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(self.store(received(seq=4, metadata="plain"))))
        self.assertIsNone(self.successResultOf(self.store(received(seq=5))))
        paths = savedFrames(self.directory, "cam")
        self.assertEqual([os.path.basename(p) for p in paths], ["00000003.jpg", "00000004.jpg", "00000005.jpg"])
        self.assertEqual(metadataPath(paths[0]), paths[0][: -len(".jpg")] + ".json")
        with open(metadataPath(paths[0]), encoding="utf-8") as f:
            text = f.read()
        self.assertEqual(text.count("\n"), 1)
        self.assertEqual(list(json.loads(text)), ["z", "site", "tags"])
        self.assertEqual(json.loads(text), metadata)
        with open(metadataPath(paths[1]), encoding="utf-8") as f:
            self.assertEqual(json.load(f), "plain")
        self.assertFalse(os.path.exists(metadataPath(paths[2])))
        self.assertEqual(
            sorted(os.listdir(os.path.dirname(paths[0]))),
            ["00000003.jpg", "00000003.json", "00000004.jpg", "00000004.json", "00000005.jpg"],
        )
        self.assertEqual(written[:2], [metadataPath(paths[0]), paths[0]])

    def test_newSessionNeverOverwrites(self):
        """
        A sender that restarts (a new session, numbering from 0 again) has
        its frames stored beside the earlier session's, which stay as they
        were; C{ls} lists the first run's frames before the second's.
        """
        for seq in range(3):
            self.store(received(seq=seq, session=1, when=1000.0 + seq, jpeg=FAKE_JPEG))
        other = b"\xff\xd8\xff\xe1" + b"second run" + b"\xff\xd9"
        for seq in range(3):
            self.store(received(seq=seq, session=2, when=2000.0 + seq, jpeg=other))
        paths = savedFrames(self.directory, "cam")
        self.assertEqual(len(paths), 6)
        contents = []
        for path in paths:
            with open(path, "rb") as f:
                contents.append(f.read())
        self.assertEqual(contents, [FAKE_JPEG] * 3 + [other] * 3)

    def test_sameSessionAfterRestartKeepsItsFolder(self):
        """
        A session seen again by a new receiver process (a fresh sink over
        the same directory) goes on in its existing folder, and a frame
        already there is reported as already stored, not written again.
        """
        self.store(received(seq=0, session=9, when=1000.0))
        again = SaveDirSink(self.directory, self.threads)
        d = again.frameReceived(received(seq=0, session=9, when=5000.0, jpeg=b"\xff\xd8\xffX\xff\xd9"))
        self.threads.runAll()
        self.assertIs(self.successResultOf(d), ALREADY_STORED)
        d = again.frameReceived(received(seq=1, session=9, when=5000.0))
        self.threads.runAll()
        paths = savedFrames(self.directory, "cam")
        self.assertEqual(len(os.listdir(os.path.join(self.directory, "cam"))), 1)
        self.assertEqual([os.path.basename(p) for p in paths], ["00000000.jpg", "00000001.jpg"])
        with open(paths[0], "rb") as f:
            self.assertEqual(f.read(), FAKE_JPEG)

    def test_fullDiskIsTemporaryAndLoggedOnce(self):
        """
        Writes failing with ENOSPC refuse their frames with a reason that
        names the path, as a temporary condition; the condition is logged
        once, not once per frame, and when writing works again storing goes
        on by itself, which is logged too.
        """
        real = self.sink._folders.store
        full = [True]

        def store(*args):
            if full[0]:
                raise OSError(errno.ENOSPC, "No space left on device", "/data/cam")
            return real(*args)

        self.sink._folders.store = store
        with capturedLogs() as events:
            failures = [self.failureResultOf(self.store(received(seq=s))) for s in range(3)]
            full[0] = False
            self.assertIsNone(self.successResultOf(self.store(received(seq=3))))
        for failure in failures:
            self.assertTrue(failure.value.temporary)
            self.assertIn("No space left on device", failure.value.reason)
            self.assertIn("/data/cam", failure.value.reason)
        errors = [e for e in events if e.get("log_level").name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["path"], "/data/cam")
        recovered = [e for e in events if "again" in e.get("log_format", "")]
        self.assertEqual(recovered[0]["count"], 3)

    def test_permissionIsPermanent(self):
        """
        A failure the receiver cannot outwait (no permission) refuses the
        frame for good.
        """
        os.makedirs(self.directory)
        # A file where the stream's folder should be.
        with open(os.path.join(self.directory, "cam"), "wb"):
            pass
        failure = self.failureResultOf(self.store(received()))
        self.assertFalse(failure.value.temporary)
        self.assertEqual(os.listdir(self.directory), ["cam"])


class StorageThroughPipelineTests(SynchronousTestCase):
    """
    The pipeline turns a sink's storage failure into a REJECT that says
    why and whether to retry, and counts it.
    """

    def test_rejectedCountedNotAcknowledged(self):
        """
        A frame that cannot be stored is rejected (retry: the disk is full)
        and counted in C{rejected} and C{storage_errors}, with no
        traceback logged; a frame found already stored is acknowledged and
        counted as a duplicate.
        """
        clock = Clock()
        threads = FakeThreadRunner()
        directory = self.mktemp()
        sink = SaveDirSink(directory, threads)
        registry, pipeline = receiverStack(clock, [sink])
        stream = registry.attach("cam", 0, 5, object())
        channel = RecordingChannel()
        real = sink._folders.store
        sink._folders.store = lambda *a: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")
        )
        pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG), channel)
        threads.runAll()
        self.assertEqual(channel.acks, [])
        self.assertEqual([seq for seq, _ in channel.rejects], [0])
        self.assertEqual(channel.retries, [True])
        snapshot = registry.snapshot()["streams"]["cam"]
        self.assertEqual((snapshot["rejected"], snapshot["storage_errors"]), (1, 1))
        self.assertEqual(snapshot["frames"], 0)
        self.assertEqual(self.flushLoggedErrors(), [])
        sink._folders.store = real
        pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG), channel)
        threads.runAll()
        self.assertEqual(channel.acks, [0])
        # The receiver restarts: a new registry and sink over the same disk.
        registry, pipeline = receiverStack(clock, [SaveDirSink(directory, threads)])
        stream = registry.attach("cam", 0, 5, object())
        pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG), channel)
        threads.runAll()
        self.assertEqual(channel.acks, [0, 0])
        snapshot = registry.snapshot()["streams"]["cam"]
        self.assertEqual((snapshot["frames"], snapshot["duplicates"]), (0, 1))
