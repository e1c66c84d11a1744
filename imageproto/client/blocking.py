# -*- test-case-name: tests.test_client -*-
"""
The blocking client itself: L{connect} and the L{Client} it returns, which
(re)connects, numbers frames, waits for their answers and runs the
background sender of L{Client.sendLatest}.  Plain sockets and threads; one
L{imageproto.client.connection.Connection} at a time.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from imageproto import wire
from imageproto.client.connection import Connection, handshake
from imageproto.client.errors import ClientError, ServerRefused, _Lost
from imageproto.client.frames import Reply, encodeFrame

__all__ = ["connect", "Client"]


def _parseAddress(address) -> tuple:
    if isinstance(address, tuple):
        return address
    host, sep, port = str(address).rpartition(":")
    if not sep:
        return (address, 8080)
    return (host.strip("[]") or "localhost", int(port))


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
        self._connection: Connection | None = None
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

    def _handshake(self, deadline: float) -> Connection:
        remaining = max(deadline - time.monotonic(), 0.01)
        sock = socket.create_connection(self.address, timeout=remaining)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            capabilities = wire.CAP_RESULTS | (wire.CAP_LIVE if self.live else 0)
            if self.token is not None:
                capabilities |= wire.CAP_AUTH
            hello = wire.Hello(self.name, capabilities, self.session)
            welcome = handshake(sock, hello, self.token)
            sock.settimeout(None)
            return Connection(self, sock, welcome)
        except BaseException:
            sock.close()
            raise

    def _connect(self, deadline: float) -> Connection:
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
