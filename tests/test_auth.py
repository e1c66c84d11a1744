# -*- test-case-name: tests.test_auth -*-
"""
Tests for L{imageproto.auth}: the digest, token files and verification.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from imageproto.auth import (
    AUTH_CONTEXT,
    AuthenticationFailed,
    TokenFileError,
    TokenTable,
    computeDigest,
    newNonce,
    readSenderToken,
)

SERVER_NONCE = bytes(range(32))
CLIENT_NONCE = bytes(range(32, 64))
TOKEN_A = "imageproto-test-token-0001"
TOKEN_B = "imageproto-test-token-0002"


class DigestTests(SynchronousTestCase):
    def test_vector(self) -> None:
        """
        The digest for PROTOCOL.md's test vector matches the published value
        (computed independently with Python's hmac module, see PROTOCOL.md).
        """
        self.assertEqual(AUTH_CONTEXT, b"imageproto-auth-v1")
        self.assertEqual(
            computeDigest(TOKEN_A.encode(), SERVER_NONCE, CLIENT_NONCE, "cam-1").hex(),
            "99e2328420c8b19405393e0cb268082729aaece756a3cdfedac999fafdc7a17f",
        )

    def test_everyInputMatters(self) -> None:
        """
        Changing the token, either nonce or the name changes the digest.
        """
        base = computeDigest(b"k" * 16, SERVER_NONCE, CLIENT_NONCE, "a")
        variants = [
            computeDigest(b"j" * 16, SERVER_NONCE, CLIENT_NONCE, "a"),
            computeDigest(b"k" * 16, CLIENT_NONCE, CLIENT_NONCE, "a"),
            computeDigest(b"k" * 16, SERVER_NONCE, SERVER_NONCE, "a"),
            computeDigest(b"k" * 16, SERVER_NONCE, CLIENT_NONCE, "b"),
        ]
        self.assertNotIn(base, variants)

    def test_nonceSize(self) -> None:
        """
        Nonces of the wrong size are refused rather than silently hashed.
        """
        self.assertRaises(
            ValueError, computeDigest, b"k" * 16, b"short", CLIENT_NONCE, "a"
        )

    def test_freshNonces(self) -> None:
        """
        L{newNonce} returns 32 bytes that differ from call to call.
        """
        nonces = {newNonce() for _ in range(50)}
        self.assertEqual(len(nonces), 50)
        self.assertEqual({len(n) for n in nonces}, {32})


class TokenTableTests(SynchronousTestCase):
    TEXT = f"""
    # token   streams
    {TOKEN_A}   cam-*  door   # two globs
    {TOKEN_B}   *
    """

    def table(self) -> TokenTable:
        return TokenTable.parse(self.TEXT, "tokens.txt")

    def answer(self, token: str, name: str) -> bytes:
        return computeDigest(token.encode(), SERVER_NONCE, CLIENT_NONCE, name)

    def test_parse(self) -> None:
        """
        Each non-comment line becomes a grant with its globs and location;
        the token stays out of the repr.
        """
        grants = self.table().grants
        self.assertEqual([g.patterns for g in grants], [("cam-*", "door"), ("*",)])
        self.assertEqual(grants[0].where, "tokens.txt:3")
        self.assertNotIn(TOKEN_A, repr(grants[0]))

    def test_verifyGlob(self) -> None:
        """
        A correct digest for a stream its token's globs cover is accepted and
        names the matching grant.
        """
        table = self.table()
        grant = table.verify(
            "cam-7", SERVER_NONCE, CLIENT_NONCE, self.answer(TOKEN_A, "cam-7")
        )
        self.assertEqual(grant.token, TOKEN_A.encode())
        grant = table.verify(
            "anything", SERVER_NONCE, CLIENT_NONCE, self.answer(TOKEN_B, "anything")
        )
        self.assertEqual(grant.token, TOKEN_B.encode())

    def test_streamNotAllowed(self) -> None:
        """
        A valid token whose globs do not cover the stream is refused with a
        reason naming the stream.
        """
        e = self.assertRaises(
            AuthenticationFailed,
            self.table().verify,
            "garage",
            SERVER_NONCE,
            CLIENT_NONCE,
            self.answer(TOKEN_A, "garage"),
        )
        self.assertIn("'garage'", e.reason)

    def test_unknownToken(self) -> None:
        """
        A digest made with a token the server does not hold is refused, and
        the reason does not echo anything secret.
        """
        e = self.assertRaises(
            AuthenticationFailed,
            self.table().verify,
            "cam-1",
            SERVER_NONCE,
            CLIENT_NONCE,
            self.answer("not-a-listed-token-at-all", "cam-1"),
        )
        self.assertEqual(e.reason, "authentication failed: unknown token")

    def test_replayRefused(self) -> None:
        """
        A digest recorded under one server nonce fails under a fresh one.
        """
        recorded = self.answer(TOKEN_A, "cam-1")
        self.assertRaises(
            AuthenticationFailed,
            self.table().verify,
            "cam-1",
            newNonce(),
            CLIENT_NONCE,
            recorded,
        )

    def test_nameSwapRefused(self) -> None:
        """
        A digest made for one name does not authenticate another name, even
        one the same token may send.
        """
        self.assertRaises(
            AuthenticationFailed,
            self.table().verify,
            "cam-2",
            SERVER_NONCE,
            CLIENT_NONCE,
            self.answer(TOKEN_A, "cam-1"),
        )

    def test_badFiles(self) -> None:
        """
        Short tokens, tokens without globs, repeated tokens and empty files
        are errors naming the file and line.
        """
        cases = {
            "short  *": "tokens.txt:1: token is 5 characters",
            f"{TOKEN_A}": "tokens.txt:1: a token needs at least one stream glob",
            f"{TOKEN_A} *\n{TOKEN_A} a": "tokens.txt:2: this token is listed twice",
            "# nothing\n\n": "tokens.txt: no tokens",
        }
        for text, message in cases.items():
            e = self.assertRaises(TokenFileError, TokenTable.parse, text, "tokens.txt")
            self.assertIn(message, str(e))

    def test_fromFile(self) -> None:
        """
        L{TokenTable.fromFile} reads a file; a missing file is a
        L{TokenFileError}.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(self.TEXT)
        self.assertEqual(len(TokenTable.fromFile(path).grants), 2)
        self.assertRaises(TokenFileError, TokenTable.fromFile, path + ".missing")


class SenderTokenTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_firstToken(self) -> None:
        """
        The sender uses the first token in its file and ignores any globs, so
        a server line can be copied as is.
        """
        path = self.write(f"# mine\n{TOKEN_A} cam-*\n{TOKEN_B}\n")
        self.assertEqual(readSenderToken(path), TOKEN_A.encode())

    def test_errors(self) -> None:
        """
        A missing file, an empty one and a short token are refused.
        """
        self.assertRaises(TokenFileError, readSenderToken, self.mktemp())
        self.assertRaises(TokenFileError, readSenderToken, self.write("# none\n"))
        self.assertRaises(TokenFileError, readSenderToken, self.write("abc\n"))
