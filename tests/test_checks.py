"""
Tests for L{imageproto.tap.checks}: the option checks both twistd commands
share.
"""

from __future__ import annotations

import os

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from imageproto.tap import checks


class NumberTests(SynchronousTestCase):
    def test_converts(self) -> None:
        """
        A value in range comes back converted to the kind asked for.
        """
        self.assertEqual(checks.number(int, 1)("max-streams", "3"), 3)
        self.assertEqual(checks.number(float, 0.001)("stats-interval", "0.5"), 0.5)
        self.assertEqual(checks.number(int, 0, 10)("heartbeat", 10), 10)

    def test_rejects(self) -> None:
        """
        Non-numbers, NaN, infinity, values out of range and a fraction
        where an integer is wanted are usage errors naming the option, the
        value and what is allowed.
        """
        cases = [
            (checks.number(int, 1), "lots", "--x lots: must be an integer at least 1"),
            (checks.number(int, 1), "0", "--x 0: must be an integer at least 1"),
            (checks.number(int, 0, 9), "10", "--x 10: must be an integer between 0 and 9"),
            (checks.number(int, 0), "1.5", "--x 1.5: must be an integer at least 0"),
            (checks.number(float, 0), "nan", "--x nan: must be a number at least 0"),
            (checks.number(float, 0), "inf", "--x inf: must be a number at least 0"),
            (checks.number(float, above=0), "0", "--x 0: must be a positive number"),
        ]
        for check, value, message in cases:
            e = self.assertRaises(UsageError, check, "x", value)
            self.assertEqual(str(e), message)

    def test_coercer(self) -> None:
        """
        A coercer applies the same rule, raises C{ValueError} (which twistd
        reports as a usage error), and carries the C{--help} text it is
        given.
        """
        coerce = checks.coercer(int, 1, 100)
        self.assertEqual(coerce("70"), 70)
        e = self.assertRaises(ValueError, coerce, "101")
        self.assertEqual(str(e), "101: must be an integer between 1 and 100")
        self.assertFalse(hasattr(coerce, "coerceDoc"))
        self.assertEqual(checks.coercer(float, 0, doc="At least 0.").coerceDoc, "At least 0.")


class EndpointTests(SynchronousTestCase):
    def test_portNumber(self) -> None:
        """
        A bare port number, spaces around it or not, means TCP on every
        interface; one over 65535 is a usage error naming the option.
        """
        self.assertEqual(checks.endpoint("web", "8081"), "tcp:8081")
        self.assertEqual(checks.endpoint("web", " 8081 "), "tcp:8081")
        e = self.assertRaises(UsageError, checks.endpoint, "web", "70000")
        self.assertEqual(str(e), "--web 70000: port numbers end at 65535")

    def test_description(self) -> None:
        """
        A server endpoint description is kept; one Twisted cannot parse is a
        usage error naming the option.
        """
        self.assertEqual(
            checks.endpoint("port", "tcp:1:interface=127.0.0.1"), "tcp:1:interface=127.0.0.1"
        )
        e = self.assertRaises(UsageError, checks.endpoint, "compat-le32", "zz:1")
        self.assertIn("--compat-le32 'zz:1' is neither a port number", str(e))

    def test_clientEndpoint(self) -> None:
        """
        A client endpoint description Twisted cannot parse is a usage error.
        """
        self.assertEqual(checks.clientEndpoint("connect", "tcp:a:1"), "tcp:a:1")
        e = self.assertRaises(UsageError, checks.clientEndpoint, "connect", "nosuchtype:x")
        self.assertIn("bad --connect 'nosuchtype:x'", str(e))


class PathTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.file = os.path.join(self.directory, "file")
        with open(self.file, "w"):
            pass

    def test_absolute(self) -> None:
        """
        Paths come back absolute.
        """
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.directory)
        self.assertEqual(checks.directory("x", "new"), os.path.join(self.directory, "new"))
        self.assertEqual(checks.existingFile("x", "file"), self.file)
        self.assertEqual(checks.existingDirectory("x", "."), self.directory)
        self.assertEqual(checks.newFile("x", "s.json"), os.path.join(self.directory, "s.json"))

    def test_rejects(self) -> None:
        """
        A directory option naming a file, a missing file or directory, and a
        file to write that is a directory or has no directory, are usage
        errors naming the option.
        """
        missing = os.path.join(self.directory, "missing")
        cases = [
            (checks.directory, self.file, "exists and is not a directory"),
            (checks.existingFile, missing, "no such file"),
            (checks.existingFile, self.directory, "no such file"),
            (checks.existingDirectory, missing, "no such directory"),
            (checks.newFile, self.directory, "is a directory"),
            (checks.newFile, os.path.join(missing, "s.json"), "does not exist"),
        ]
        for check, value, message in cases:
            e = self.assertRaises(UsageError, check, "opt", value)
            self.assertIn("--opt ", str(e))
            self.assertIn(message, str(e))

    def test_apply(self) -> None:
        """
        L{checks.apply} stores each check's result and skips unset options.
        """
        options = {"a": "8081", "b": None}
        checks.apply(options, [("a", checks.endpoint), ("b", checks.endpoint)])
        self.assertEqual(options, {"a": "tcp:8081", "b": None})


class MetadataTests(SynchronousTestCase):
    def test_compactText(self) -> None:
        """
        C{checks.metadata} returns the JSON object or string compactly, in
        UTF-8 text, keys in the order given.
        """
        self.assertEqual(
            checks.metadata("metadata", '{ "b" : 1, "a" : "caf\\u00e9" }'),
            '{"b":1,"a":"caf\N{LATIN SMALL LETTER E WITH ACUTE}"}',
        )
        self.assertEqual(checks.metadata("metadata", '"door"'), '"door"')

    def test_rejects(self) -> None:
        """
        Anything else is a usage error that names the option and says what
        to give instead.
        """
        for bad in ("door", "[]", "1", "true", "{", '{"a": Infinity}'):
            with self.assertRaises(UsageError) as caught:
                checks.metadata("metadata", bad)
            self.assertIn("--metadata", str(caught.exception))
            self.assertIn("JSON object", str(caught.exception))
