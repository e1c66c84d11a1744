"""
Tests for L{imageproto.common}: the rules the other layers share.
"""

from __future__ import annotations

import json
import os
from unittest import mock

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from imageproto.common import files
from imageproto.common.buffers import partsAfter
from imageproto.common.files import writeBytesAtomically, writeJsonAtomically
from imageproto.common.numbers import percentile
from imageproto.common.reactor import defaultReactor

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None


class PartsAfterTests(SynchronousTestCase):
    """
    L{partsAfter}: what is left of a gathered write after C{sent} bytes.
    """

    def test_rest(self):
        parts = [b"head", b"jpegjpeg", b"tail"]
        for sent in range(len(b"".join(parts)) + 1):
            rest = partsAfter(parts, sent)
            self.assertEqual(b"".join(rest), b"".join(parts)[sent:])
        self.assertEqual(partsAfter(parts, 16), [])
        # At a part's end the next part goes as it is, not copied.
        self.assertIs(partsAfter(parts, 4)[1], parts[2])


class PercentileTests(SynchronousTestCase):
    """
    L{percentile} is the nearest-rank percentile: rank C{ceil(fraction * n)},
    1-based, of the sorted values.
    """

    def test_empty(self):
        """
        The percentile of no values is C{None}, whatever the fraction.
        """
        self.assertIsNone(percentile([], 0.5))
        self.assertIsNone(percentile([], 0.0))
        self.assertIsNone(percentile(iter(()), 1.0))

    def test_single(self):
        """
        Every percentile of one value is that value.
        """
        for fraction in (0.0, 0.01, 0.5, 0.99, 1.0):
            self.assertEqual(percentile([7], fraction), 7)

    def test_oneToHundred(self):
        """
        Over 1..100 (in any order) the pN percentile is N.
        """
        values = list(range(100, 0, -1))
        for n in (1, 7, 25, 50, 95, 99, 100):
            self.assertEqual(percentile(values, n / 100), n)

    def test_ceilingRank(self):
        """
        A rank between two values rounds up: over four values p50 is the
        second and p51 the third; nothing is interpolated.
        """
        values = [10, 20, 30, 40]
        self.assertEqual(percentile(values, 0.5), 20)
        self.assertEqual(percentile(values, 0.51), 30)
        self.assertEqual(percentile(values, 0.26), 20)
        self.assertEqual(percentile([1.0, 2.0], 0.99), 2.0)

    def test_ends(self):
        """
        Fraction 0 gives the smallest value and 1 the largest.
        """
        values = [5, 3, 9, 1]
        self.assertEqual(percentile(values, 0.0), 1)
        self.assertEqual(percentile(values, 1.0), 9)

    def test_floatNoise(self):
        """
        A product that is an integer but for floating-point noise
        (C{0.07 * 100 == 7.000000000000001}) is taken as that integer.
        """
        self.assertEqual(percentile(range(1, 101), 0.07), 7)
        self.assertEqual(percentile(range(1, 1001), 0.29), 290)

    def test_iterableReadOnce(self):
        """
        Any iterable will do, a generator included; the input is not changed.
        """
        values = [3, 1, 2]
        self.assertEqual(percentile((v for v in values), 0.5), 2)
        self.assertEqual(values, [3, 1, 2])

    def test_fractionOutOfRange(self):
        """
        A fraction below 0 or above 1 (a percent passed as a number, say) is
        a L{ValueError}.
        """
        self.assertRaises(ValueError, percentile, [1, 2], 95)
        self.assertRaises(ValueError, percentile, [1, 2], -0.1)


class WriteBytesAtomicallyTests(SynchronousTestCase):
    """
    L{writeBytesAtomically} replaces a file whole, durably, and cleans up
    after itself.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "frame.jpg")

    def read(self):
        with open(self.path, "rb") as f:
            return f.read()

    def test_createsAndReplaces(self):
        """
        The first write creates the file, the next replaces its contents,
        and no temporary file is left beside it.
        """
        writeBytesAtomically(self.path, b"first, longer contents")
        self.assertEqual(self.read(), b"first, longer contents")
        writeBytesAtomically(self.path, b"second")
        self.assertEqual(self.read(), b"second")
        self.assertEqual(os.listdir(self.directory), ["frame.jpg"])

    def test_fsyncsFileAndDirectory(self):
        """
        The data is synced before the rename and the directory after it, so
        that the new file survives a power cut once the call returns.
        """
        calls = []
        realFsync, realReplace = os.fsync, os.replace

        def fsync(fd):
            calls.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
            realFsync(fd)

        def replace(src, dst):
            calls.append(("replace", None))
            realReplace(src, dst)

        with mock.patch.object(files.os, "fsync", fsync), mock.patch.object(
            files.os, "replace", replace
        ):
            writeBytesAtomically(self.path, b"data")
        kinds = [kind for kind, _ in calls]
        self.assertEqual(kinds[:2], ["fsync", "replace"])
        if hasattr(os, "O_DIRECTORY"):
            self.assertEqual(kinds, ["fsync", "replace", "fsync"])
            if os.path.isdir("/proc/self/fd"):
                self.assertEqual([isDir for _, isDir in calls], [False, None, True])

    def test_failedWriteLeavesOldFile(self):
        """
        When writing fails, the error propagates, the old file is intact and
        no temporary file is left behind.
        """
        writeBytesAtomically(self.path, b"old")

        def failingFsync(fd):
            raise OSError(28, "No space left on device")

        with mock.patch.object(files.os, "fsync", failingFsync):
            self.assertRaises(OSError, writeBytesAtomically, self.path, b"new")
        self.assertEqual(self.read(), b"old")
        self.assertEqual(os.listdir(self.directory), ["frame.jpg"])

    def test_failedRenameLeavesOldFile(self):
        """
        When the rename fails, the temporary file is removed too.
        """
        writeBytesAtomically(self.path, b"old")

        def failingReplace(src, dst):
            raise PermissionError(13, "Permission denied")

        with mock.patch.object(files.os, "replace", failingReplace):
            self.assertRaises(PermissionError, writeBytesAtomically, self.path, b"new")
        self.assertEqual(self.read(), b"old")
        self.assertEqual(os.listdir(self.directory), ["frame.jpg"])

    def test_missingDirectory(self):
        """
        The directory must exist: writing into a missing one is an
        L{OSError} and creates nothing.
        """
        path = os.path.join(self.directory, "missing", "frame.jpg")
        self.assertRaises(OSError, writeBytesAtomically, path, b"data")
        self.assertEqual(os.listdir(self.directory), [])


class WriteJsonAtomicallyTests(SynchronousTestCase):
    """
    L{writeJsonAtomically} writes strict JSON through L{writeBytesAtomically}.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "stats.json")

    def test_roundTrip(self):
        """
        The file holds the value as JSON, keys sorted, with a final newline.
        """
        writeJsonAtomically(self.path, {"b": [1, 2.5, None], "a": "x"})
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        self.assertEqual(json.loads(text), {"a": "x", "b": [1, 2.5, None]})
        self.assertTrue(text.endswith("}\n"))
        self.assertLess(text.index('"a"'), text.index('"b"'))

    def test_keyOrderKept(self):
        """
        With C{sortKeys=False} keys keep their order.
        """
        writeJsonAtomically(self.path, {"b": 1, "a": 2}, indent=None, sortKeys=False)
        with open(self.path, encoding="utf-8") as f:
            self.assertEqual(f.read(), '{"b": 1, "a": 2}\n')

    def test_nonFiniteWrittenAsNull(self):
        """
        NaN and the infinities are not JSON: they are written as C{null},
        nested or not, so the file stays strict JSON that any reader takes
        (a statistics file must not stop updating over one odd number).
        """
        for bad in (float("nan"), float("inf"), float("-inf")):
            writeJsonAtomically(self.path, {"fps": bad, "nested": [1, {"x": bad}]})
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            self.assertNotIn("NaN", text)
            self.assertNotIn("Infinity", text)
            self.assertEqual(json.loads(text), {"fps": None, "nested": [1, {"x": None}]})
        self.assertEqual(os.listdir(self.directory), ["stats.json"])

    def test_refusesUnserializable(self):
        """
        A value JSON has no form for is a L{TypeError}, and nothing is
        written.
        """
        self.assertRaises(TypeError, writeJsonAtomically, self.path, {"x": object()})
        self.assertEqual(os.listdir(self.directory), [])


class DefaultReactorTests(SynchronousTestCase):
    """
    L{defaultReactor} is the one fallback to the global reactor.
    """

    def test_givenReactor(self):
        """
        A reactor (or clock) that is passed in is returned as it is.
        """
        clock = Clock()
        self.assertIs(defaultReactor(clock), clock)

    def test_globalReactor(self):
        """
        With no argument, or C{None}, it is the global reactor.
        """
        from twisted.internet import reactor

        self.assertIs(defaultReactor(), reactor)
        self.assertIs(defaultReactor(None), reactor)


class JpegTests(SynchronousTestCase):
    """
    L{imageproto.common.jpeg} encodes and decodes through OpenCV.
    """

    def setUp(self):
        if cv2 is None:
            raise self.skipTest("OpenCV (cv2) is not installed")

    def test_roundTrip(self):
        """
        An encoded array decodes to an array of the same shape.
        """
        import numpy

        from imageproto.common.jpeg import decodeJpeg, encodeJpeg

        image = numpy.full((12, 16, 3), 90, numpy.uint8)
        data = encodeJpeg(image, quality=70)
        self.assertTrue(data.startswith(b"\xff\xd8"))
        self.assertEqual(decodeJpeg(data).shape, (12, 16, 3))

    def test_unreadable(self):
        """
        Bytes that are not an image are a L{ValueError}.
        """
        from imageproto.common.jpeg import decodeJpeg

        self.assertRaises(ValueError, decodeJpeg, b"not an image")
