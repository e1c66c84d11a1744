# -*- test-case-name: tests.test_client -*-
"""
A blocking Python API for scripts: no reactor, plain sockets and threads.

    import imageproto

    with imageproto.connect("localhost:8080", name="cam1") as stream:
        reply = stream.send(image)        # numpy BGR array or JPEG bytes
        for d in reply.detections:        # [] when the server does not detect
            print(d["label"], d["confidence"], d["box"])

L{Client.send} blocks until the server answers that frame: with its RESULT
when the server runs a detector (C{--detect}, replying), otherwise with its
ACK.  Either way the answer is a L{Reply}.  It reconnects under the hood
(the same session, so a resent frame is recognised) and raises
C{TimeoutError} when no answer came within C{timeout} seconds.

For a live loop, L{Client.sendLatest} never blocks: it keeps only the newest
frame offered, a background thread sends it when the previous one has been
answered, and L{Client.latest} (or an C{onReply} callback) gives the newest
answer::

    with imageproto.connect("localhost:8080", name="cam1", live=True) as s:
        while True:
            ok, frame = camera.read()
            s.sendLatest(frame)
            reply = s.latest()            # None until the first answer
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from attrs import field, frozen

from imageproto import wire

__all__ = [
    "connect",
    "Client",
    "Reply",
    "ClientError",
    "FrameRejected",
    "ServerRefused",
    "encodeFrame",
]

_PREFIX = struct.Struct("!I")


class ClientError(Exception):
    """
    The server could not be reached or broke the protocol.
    """


class ServerRefused(ClientError):
    """
    The server refused the stream (ERROR during the handshake): a bad name,
    a missing token, too many streams.

    @ivar code: the C{wire.ERR_*} code.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server refused the stream: {reason} (code {code})")
        self.code = code
        self.reason = reason


class FrameRejected(ClientError):
    """
    The server refused this one frame (REJECT); the stream carries on.
    """


class _Lost(Exception):
    """
    The connection went away while a frame waited for its answer.
    """


@frozen
class Reply:
    """
    The server's answer to one frame.

    @ivar seq: the frame's sequence number.
    @ivar detections: C{{"label", "confidence", "box": [x, y, w, h]}} dicts,
        C{[]} when the server does not detect.
    @ivar detected: C{True} for a RESULT, C{False} for a bare ACK.
    @ivar processingMicros: the detector's time.
    @ivar jpeg: the marked-up frame (C{--reply annotated}), else C{b""}.
    @ivar roundTrip: seconds from sending to this answer, on this clock.
    """

    seq: int
    detections: list = field(factory=list)
    detected: bool = False
    processingMicros: int = 0
    jpeg: bytes = field(default=b"", repr=False)
    roundTrip: float = 0.0

    def image(self):
        """
        The marked-up frame decoded to a BGR numpy array, or C{None}.
        """
        if not self.jpeg:
            return None
        from imageproto.features.inference.detectors import decodeImage

        return decodeImage(self.jpeg)


def encodeFrame(image, quality: int = 90) -> bytes:
    """
    JPEG bytes pass through (checked); a numpy array is JPEG-encoded.

    @raise ValueError: for bytes that are not a JPEG.
    @raise TypeError: for anything else.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not wire.isJpeg(data):
            raise ValueError("bytes given to send() must be a JPEG")
        return data
    if hasattr(image, "shape"):
        from imageproto.features.inference.detectors import encodeImage

        return encodeImage(image, quality)
    raise TypeError(f"cannot send a {type(image).__name__}: give a numpy image or JPEG bytes")


def _parseAddress(address) -> tuple:
    if isinstance(address, tuple):
        return address
    host, sep, port = str(address).rpartition(":")
    if not sep:
        return (address, 8080)
    return (host.strip("[]") or "localhost", int(port))


class _Connection:
    """
    One TCP connection: the handshake, a reader thread, and the futures of
    the frames awaiting an answer.
    """

    def __init__(self, client: "Client", sock: socket.socket, welcome: wire.Welcome) -> None:
        self.client = client
        self.sock = sock
        self.welcome = welcome
        self.detects = bool(welcome.capabilities & wire.SCAP_DETECT)
        self.waiting: dict[int, tuple] = {}
        # Live frames acknowledged but not yet answered (see _read).
        self._acked: set[int] = set()
        self.lock = threading.Lock()
        self.closed = False
        self.error: Exception | None = None
        self.reader = threading.Thread(
            target=self._read, name="imageproto-client-reader", daemon=True
        )
        self.reader.start()

    def write(self, message) -> None:
        data = wire.encodeMessage(message)
        with self.lock:
            if self.closed:
                raise _Lost(self.error or "closed")
            try:
                self.sock.sendall(_PREFIX.pack(len(data)) + data)
            except OSError as e:
                raise _Lost(e) from None

    def expect(self, seq: int, sentAt: float) -> Future:
        future: Future = Future()
        with self.lock:
            if self.closed:
                raise _Lost(self.error or "closed")
            self.waiting[seq] = (future, sentAt)
        return future

    def _settle(self, seq: int, outcome) -> None:
        with self.lock:
            entry = self.waiting.pop(seq, None)
        if entry is None:
            return
        future, sentAt = entry
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
            return
        roundTrip = time.monotonic() - sentAt
        if isinstance(outcome, wire.Result):
            reply = Reply(
                outcome.seq, outcome.detections, True, outcome.processingMicros,
                outcome.jpeg, roundTrip,
            )
        else:
            reply = Reply(outcome.seq, roundTrip=roundTrip)
        future.set_result(reply)

    def _read(self) -> None:
        try:
            while True:
                message = _readMessage(self.sock)
                if isinstance(message, wire.Result):
                    self._settle(message.seq, message)
                    if self.client.live:
                        self._settleSkipped(message.seq)
                elif isinstance(message, wire.Ack):
                    if not self.detects:
                        self._settle(message.seq, message)
                    elif self.client.live:
                        with self.lock:
                            self._acked.add(message.seq)
                elif isinstance(message, wire.Reject):
                    self._settle(message.seq, FrameRejected(message.reason))
                elif isinstance(message, wire.Ping):
                    self.write(wire.Pong(message.token))
                elif isinstance(message, wire.Error):
                    raise ClientError(f"server error {message.code}: {message.reason}")
        except (OSError, ClientError, _Lost, wire.WireError) as e:
            self.shutdown(e)

    def _settleSkipped(self, answered: int) -> None:
        """
        A RESULT for live frame C{answered} came.  RESULTs come in order and
        the server skips a live stream's stale frames (PROTOCOL.md,
        "Results"), so frames acknowledged before it that still wait will
        never get one: answer them with their acknowledgement
        (C{detected=False}) rather than let their callers time out.
        """
        with self.lock:
            skipped = sorted(seq for seq in self._acked if seq <= answered)
            self._acked.difference_update(skipped)
        for seq in skipped:
            if seq != answered:
                self._settle(seq, wire.Ack(seq))

    def shutdown(self, error=None) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.error = error
            waiting, self.waiting = self.waiting, {}
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for future, _ in waiting.values():
            future.set_exception(_Lost(error))


def _recvExactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ClientError("the server closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _readMessage(sock: socket.socket, limit: int = 64 * 1024 * 1024):
    (length,) = _PREFIX.unpack(_recvExactly(sock, _PREFIX.size))
    if length > limit:
        raise ClientError(f"the server sent a {length}-byte message")
    return wire.decodeMessage(_recvExactly(sock, length))


class Client:
    """
    A named stream to a receiver, for scripts.  Build it with L{connect}.
    Thread-safe: L{send} may be called from several threads.

    @ivar detects: whether the server answers frames with RESULTs.
    @ivar dropped: frames L{sendLatest} replaced before they were sent.
    """

    def __init__(
        self,
        address,
        name: str,
        timeout: float = 10.0,
        live: bool = False,
        token: bytes | str | None = None,
        quality: int = 90,
        onReply: Callable[[Reply], object] | None = None,
    ) -> None:
        self.address = _parseAddress(address)
        self.name = name
        self.timeout = timeout
        self.live = live
        self.token = token.encode("utf-8") if isinstance(token, str) else token
        self.quality = quality
        self.onReply = onReply
        self.session = int.from_bytes(os.urandom(8), "big")
        self.dropped = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._closed = False
        self._latestIn = None
        self._latestOut: Reply | None = None
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._connect(time.monotonic() + timeout)

    @property
    def detects(self) -> bool:
        connection = self._connection
        return connection is not None and connection.detects

    # -- connecting ---------------------------------------------------------

    def _handshake(self, deadline: float) -> _Connection:
        remaining = max(deadline - time.monotonic(), 0.01)
        sock = socket.create_connection(self.address, timeout=remaining)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            capabilities = wire.CAP_RESULTS | (wire.CAP_LIVE if self.live else 0)
            if self.token is not None:
                capabilities |= wire.CAP_AUTH
            self._sendRaw(sock, wire.Hello(self.name, capabilities, self.session))
            while True:
                message = _readMessage(sock)
                if isinstance(message, wire.Welcome):
                    sock.settimeout(None)
                    return _Connection(self, sock, message)
                if isinstance(message, wire.Error):
                    raise ServerRefused(message.code, message.reason)
                if isinstance(message, wire.Challenge) and self.token is not None:
                    from imageproto.protocol.tokens import computeDigest, newNonce

                    nonce = newNonce()
                    digest = computeDigest(self.token, message.nonce, nonce, self.name)
                    self._sendRaw(sock, wire.Auth(nonce, digest))
                elif isinstance(message, wire.Ping):
                    self._sendRaw(sock, wire.Pong(message.token))
                else:
                    raise ClientError(
                        f"unexpected {type(message).__name__} before WELCOME"
                    )
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _sendRaw(sock, message) -> None:
        data = wire.encodeMessage(message)
        sock.sendall(_PREFIX.pack(len(data)) + data)

    def _connect(self, deadline: float) -> _Connection:
        """
        The current connection, reconnecting (with backoff) until
        C{deadline} if it is gone.
        """
        with self._lock:
            connection = self._connection
            if connection is not None and not connection.closed:
                return connection
            delay = 0.05
            while True:
                if self._closed:
                    raise ClientError("the client is closed")
                try:
                    self._connection = self._handshake(deadline)
                    return self._connection
                except ServerRefused:
                    raise
                except (OSError, ClientError, wire.WireError) as e:
                    if time.monotonic() + delay > deadline:
                        raise TimeoutError(
                            f"cannot connect to {self.address[0]}:{self.address[1]}: {e}"
                        ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- sending ------------------------------------------------------------

    def _nextSeq(self) -> int:
        with self._lock:
            seq = self._seq
            self._seq += 1
            return seq

    def send(self, image, timeout: float | None = None) -> Reply:
        """
        Send one frame and wait for the server's answer to it.

        @param image: a BGR numpy array (JPEG-encoded here) or JPEG bytes.
        @param timeout: seconds to wait, reconnections included; the
            client's default when C{None}.
        @raise TimeoutError: if no answer came in time.
        @raise FrameRejected: if the server refused the frame.
        @raise ServerRefused: if the server refuses the stream.
        """
        jpeg = encodeFrame(image, self.quality)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        reply = self._roundTrip(self._nextSeq(), jpeg, time.time(), deadline)
        self._notify(reply)
        return reply

    def _notify(self, reply: Reply) -> None:
        if self.onReply is not None:
            self.onReply(reply)

    def _roundTrip(self, seq: int, jpeg: bytes, captureTime: float, deadline: float) -> Reply:
        while True:
            connection = self._connect(deadline)
            try:
                future = connection.expect(seq, time.monotonic())
                connection.write(wire.Frame(seq, jpeg, captureTime, time.time()))
                reply = future.result(max(deadline - time.monotonic(), 0))
            except FutureTimeout:
                with connection.lock:
                    connection.waiting.pop(seq, None)
                raise TimeoutError(f"no answer to frame {seq} in time") from None
            except _Lost:
                # Resent on the next connection under the same session: the
                # server recognises it and answers again.
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"connection lost; frame {seq} unanswered") from None
                continue
            return reply

    def sendLatest(self, image) -> None:
        """
        Offer a frame without waiting.  Only the newest offered frame is
        kept; it is sent once the previous one has been answered.  Frames
        replaced before being sent are counted in L{dropped}.

        What a caller can rely on: the newest frame offered is always sent
        (it can only be replaced by a newer offer, never discarded), so
        after the last call its answer becomes L{latest} within about one
        round trip, unless that round trip fails (the connection cannot be
        restored, or no answer within C{timeout}).  Sequence numbers are
        given when a frame is I{sent}, not when it is offered: if the
        sending thread was not scheduled during a burst of offers, only the
        last one is sent, possibly as seq 0.  Every offer is either sent or
        counted in L{dropped}.  C{onReply} is called after L{latest} already
        returns that reply.
        """
        if self._closed:
            raise ClientError("the client is closed")
        if hasattr(image, "copy") and not isinstance(image, bytes):
            image = image.copy()  # the caller may reuse its buffer
        with self._wake:
            if self._latestIn is not None:
                self.dropped += 1
            self._latestIn = (image, time.time())
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._sendLoop, name="imageproto-client-sender", daemon=True
                )
                self._worker.start()
            self._wake.notify()

    def latest(self) -> Reply | None:
        """
        The newest answer to a frame sent by L{sendLatest}, or C{None}.
        """
        return self._latestOut

    def _sendLoop(self) -> None:
        while True:
            with self._wake:
                while self._latestIn is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                (image, captureTime), self._latestIn = self._latestIn, None
            try:
                jpeg = encodeFrame(image, self.quality)
                reply = self._roundTrip(
                    self._nextSeq(), jpeg, captureTime, time.monotonic() + self.timeout
                )
            except (ClientError, TimeoutError, ValueError, TypeError):
                if self._closed:
                    return
                continue
            # Published before onReply, so a callback that reads latest()
            # sees the reply it was called with.
            self._latestOut = reply
            self._notify(reply)

    def close(self) -> None:
        """
        Say BYE and close; the background sender (if any) stops.
        """
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        connection = self._connection
        if connection is not None and not connection.closed:
            try:
                connection.write(wire.Bye("client closed"))
            except _Lost:
                pass
            connection.shutdown()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(self.timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(
    address="localhost:8080",
    name: str = "python",
    *,
    timeout: float = 10.0,
    live: bool = False,
    token: bytes | str | None = None,
    quality: int = 90,
    onReply: Callable[[Reply], object] | None = None,
) -> Client:
    """
    Open a named stream to an imageproto receiver.

    @param address: C{"host:port"} or C{(host, port)}.
    @param name: the stream name (1-64 of C{[A-Za-z0-9._-]}).
    @param timeout: the default for L{Client.send}, and for connecting.
    @param live: announce a live source (the server may skip stale frames).
    @param token: a shared token, for receivers started with
        C{--token-file}.
    @param quality: JPEG quality for numpy images.
    @param onReply: called (in the sending thread) with each L{Reply}.
    @raise TimeoutError: if the receiver cannot be reached in C{timeout}.
    @raise ServerRefused: if it refuses the stream.
    """
    return Client(
        address, name, timeout=timeout, live=live, token=token, quality=quality,
        onReply=onReply,
    )
