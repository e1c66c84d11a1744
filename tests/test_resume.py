"""
Tests for L{imageproto.sender.resume}: a finite source's session names its
content.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from imageproto.sender.resume import sourceSession


class SourceSessionTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.video = os.path.join(self.directory, "clip.avi")
        with open(self.video, "wb") as f:
            f.write(b"frames")

    def test_stable(self):
        """
        The same file under the same name and options is the same session,
        a 64-bit number.
        """
        a = sourceSession("cam", "video", self.video, (0, 90))
        self.assertEqual(a, sourceSession("cam", "video", self.video, (0, 90)))
        self.assertTrue(0 <= a < 2**64)

    def test_changes(self):
        """
        Another name, other options, or a changed file make another session.
        """
        a = sourceSession("cam", "video", self.video, (0, 90))
        self.assertNotEqual(a, sourceSession("other", "video", self.video, (0, 90)))
        self.assertNotEqual(a, sourceSession("cam", "video", self.video, (0, 80)))
        with open(self.video, "ab") as f:
            f.write(b"more")
        self.assertNotEqual(a, sourceSession("cam", "video", self.video, (0, 90)))

    def test_folder(self):
        """
        A folder's session follows the names and sizes of its files.
        """
        with open(os.path.join(self.directory, "b.jpg"), "wb") as f:
            f.write(b"b")
        a = sourceSession("cam", "images", self.directory)
        self.assertEqual(a, sourceSession("cam", "images", self.directory))
        with open(os.path.join(self.directory, "c.jpg"), "wb") as f:
            f.write(b"c")
        self.assertNotEqual(a, sourceSession("cam", "images", self.directory))

    def test_missing(self):
        """
        A source that cannot be read raises L{OSError}.
        """
        self.assertRaises(OSError, sourceSession, "cam", "video", "/nonexistent/clip.avi")
