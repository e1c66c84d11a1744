# -*- test-case-name: tests.test_client -*-
"""
The blocking client itself: L{connect} and the L{Client} it returns, which
(re)connects, numbers frames, keeps up to C{window} of them in flight
(L{PendingFrame}), resends the unanswered ones after a reconnect, and runs
the background sender of L{Client.sendLatest}.  Plain sockets and threads;
one L{imageproto.client.connection.Connection} at a time.

Locks, outermost first: C{Client._lock} (the connection; held while
connecting and writing, so frames go out in order), C{Client._state} (the
window and every L{PendingFrame}'s state, with two conditions on it:
C{_room}, waited on for room in the window, and C{_changed}, waited on for
a frame's answer; never held while blocking on I/O), C{Connection.lock}.
The connection's reader thread never takes C{Client._lock}, so it keeps
reading answers while a writer waits for the socket.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Callable

from imageproto import wire
from imageproto.client.connection import Connection, handshake
from imageproto.client.errors import ClientError, MetadataUnsupported, ServerRefused, _Lost
from imageproto.client.frames import Reply, encodeFrame, framedParts
from imageproto.client.transport import Address, openTransport, parseAddress, tlsContext

from imageproto.client.pending import PendingFrame

__all__ = ["connect", "Client", "PendingFrame", "metadataSupported"]


class _Gone(ClientError):
    """
    The connection of a client built on an adopted socket (C{sock=}) is
    closed: such a client cannot reconnect.
    """


def metadataSupported(welcome: wire.Welcome) -> bool:
    """
    Whether frames on a connection welcomed by C{welcome} can carry
    metadata: the server announced C{SCAP_METADATA}.
    """
    return bool(welcome.capabilities & wire.SCAP_METADATA)


class Client:
    """
    A named stream to a receiver, for scripts.  Build it with L{connect}.
    Thread-safe: L{send} may be called from several threads.

    @ivar detects: whether the server answers frames with RESULTs.
    @ivar dropped: frames L{sendLatest} replaced before they were sent.
    @ivar window: how many frames may be unanswered at once.

    With C{sock} (an already connected socket, such as one a listening
    publisher accepted), the handshake runs on that socket and the client
    never reconnects: once it is closed, sending raises L{ClientError}.
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
        window: int | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        tls: bool | None = None,
        sock=None,
    ) -> None:
        if window is None:
            window = wire.defaultWindow(live)
        if window < 1:
            raise ValueError("window must be at least 1")
        self.address: Address = parseAddress(address)
        self.name = name
        self.timeout = timeout
        self.live = live
        self.token = token.encode("utf-8") if isinstance(token, str) else token
        self.quality = quality
        self.onReply = onReply
        self.window = window
        if tls is None:
            tls = self.address.tls or ca is not None or cert is not None
        if sock is not None and tls:
            raise ValueError("an adopted socket (sock=) takes plain TCP, not TLS")
        self._tls = tlsContext(ca, cert, key) if tls else None
        # An adopted socket (an accepted connection, imagezmq's PUB side):
        # the handshake runs on it once, and the client never reconnects.
        self._adopted = sock
        self._adopting = sock is not None
        self.session = int.from_bytes(os.urandom(8), "big")
        self.dropped = 0
        self._seq = 0
        self._lock = threading.RLock()
        self._state = threading.Lock()
        self._room = threading.Condition(self._state)
        self._changed = threading.Condition(self._state)
        # Threads waiting on each condition: most answers find none, and
        # then skip the notify.
        self._roomWaiters = 0
        self._changedWaiters = 0
        self._pending: dict[int, PendingFrame] = {}
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

    @property
    def metadata(self) -> bool:
        """
        Whether the connected server takes per-frame metadata.
        """
        connection = self._connection
        return connection is not None and metadataSupported(connection.welcome)

    # -- connecting ---------------------------------------------------------

    def _handshake(self, deadline: float) -> Connection:
        remaining = max(deadline - time.monotonic(), 0.01)
        if self._adopting:
            sock, self._adopted = self._adopted, None
            if sock is None:
                raise _Gone("the connection is closed (an accepted connection is not reopened)")
            sock.settimeout(remaining)
        else:
            sock = openTransport(self.address, remaining, self._tls)
        try:
            capabilities = wire.CAP_RESULTS | (wire.CAP_LIVE if self.live else 0)
            capabilities |= getattr(wire, "CAP_METADATA", 0)
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
        C{deadline} if it is gone; a new connection first sends again every
        frame still unanswered, in order.
        """
        with self._lock:
            connection = self._connection
            if connection is not None and not connection.closed:
                return connection
            delay = 0.05
            cause = None
            while True:
                if self._closed:
                    raise ClientError("the client is closed")
                try:
                    connection = self._connection = self._handshake(deadline)
                    for pending in self._unanswered():
                        self._transmit(connection, pending)
                    return connection
                except (ServerRefused, _Gone):
                    raise
                except (OSError, ClientError, _Lost, wire.WireError) as e:
                    if self._adopting:
                        raise _Gone(f"the handshake on an accepted connection failed: {e}") from None
                    # The last attempt may only have run out of time (its
                    # socket timeout is what is left): then name the error
                    # the attempt before it met, such as the certificate the
                    # server presented.
                    last = time.monotonic() + delay > deadline
                    if cause is None or not (last and isinstance(e, TimeoutError)):
                        cause = e
                    if last:
                        raise TimeoutError(
                            f"cannot connect to {self.address.host}:{self.address.port}: {cause}"
                        ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _restore(self, deadline: float) -> None:
        self._connect(deadline)

    def _unanswered(self) -> list[PendingFrame]:
        with self._state:
            return sorted(
                (p for p in self._pending.values() if not p.done()), key=lambda p: p.seq
            )

    def _transmit(self, connection: Connection, pending: PendingFrame) -> None:
        """
        Send C{pending}'s frame on C{connection} (under C{_lock}).

        @raise _Lost: if the connection is gone; the frame stays pending.
        """
        pending._sent(connection)
        connection.expect(pending, time.monotonic())
        sendTime = pending.sendTime = time.time()
        connection.writeParts(
            framedParts(
                pending.seq, pending.jpeg, pending.captureTime, sendTime, pending._metadataBytes
            )
        )

    # -- sending ------------------------------------------------------------

    def _makeFrame(self, seq: int, jpeg: bytes, captureTime, metadata) -> PendingFrame:
        """
        Frame C{seq}, checked as a C{wire.Frame} would check it: a finite
        C{float} capture time and no metadata pass as they are (every frame
        but the unusual one), anything else is made into a C{wire.Frame}
        once, whose converters and validators decide.

        @raise ValueError: for a capture time that is not finite, or bad
            metadata.
        @raise MetadataUnsupported: if there is metadata and the server does
            not take it.
        """
        if metadata is None:
            if captureTime.__class__ is not float or not math.isfinite(captureTime):
                captureTime = wire.Frame(seq, jpeg, captureTime, 0.0).captureTime
            return PendingFrame(self, seq, jpeg, captureTime)
        connection = self._connection
        if connection is None or not metadataSupported(connection.welcome):
            raise MetadataUnsupported(
                "the server does not take per-frame metadata (it needs an imageproto "
                "receiver that announces SCAP_METADATA); send without metadata="
            )
        # A dict (a JSON object) or a str (a JSON string), as JSON text.
        frame = wire.Frame(seq, jpeg, captureTime, 0.0, metadata=wire.encodeMetadata(metadata))
        return PendingFrame(self, seq, jpeg, frame.captureTime, frame.metadata)

    def send(
        self,
        image,
        timeout: float | None = None,
        *,
        wait: bool = True,
        captureTime: float | None = None,
        metadata=None,
        quality: int | None = None,
    ):
        """
        Send one frame.  With C{wait} (the default), wait for the server's
        answer to it and return that L{Reply}; with C{wait=False}, return a
        L{PendingFrame} as soon as the frame is written, so that up to
        C{window} frames are in flight at once (it blocks only while the
        window is full).

        @param image: a BGR numpy array (JPEG-encoded here) or JPEG bytes.
        @param timeout: seconds to wait, reconnections included; the
            client's default when C{None}.
        @param captureTime: when the frame was captured (C{time.time()}
            clock); now when C{None}.
        @param metadata: per-frame metadata for a server that takes it: a
            C{dict} (a JSON object) or a C{str} (a JSON string), at most 4096
            bytes of JSON (PROTOCOL.md, Per-frame metadata).
        @param quality: JPEG quality for a numpy image; the client's own
            when C{None}.
        @raise TimeoutError: if no answer (or, without C{wait}, no room in
            the window) came in time.
        @raise FrameRejected: if the server refused the frame.
        @raise ServerRefused: if the server refuses the stream.
        @raise MetadataUnsupported: if C{metadata} is given and the server
            cannot take it.
        """
        jpeg = encodeFrame(image, self.quality if quality is None else quality)
        if captureTime is None:
            captureTime = time.time()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        pending = self._submit(jpeg, captureTime, metadata, deadline)
        if not wait:
            return pending
        try:
            reply = pending.result(max(deadline - time.monotonic(), 0))
        except TimeoutError:
            self._abandon(pending)
            raise
        self._notify(reply)
        return reply

    def sendAsync(self, image, **kwargs) -> PendingFrame:
        """
        L{send} with C{wait=False}: returns a L{PendingFrame}.
        """
        return self.send(image, wait=False, **kwargs)

    def _submit(self, jpeg: bytes, captureTime: float, metadata, deadline: float) -> PendingFrame:
        # Wait for room in the window first, outside the connection lock:
        # answers keep arriving on the reader thread meanwhile.
        with self._state:
            while len(self._pending) >= self.window:
                if self._closed:
                    raise ClientError("the client is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.window} frames unanswered (the window is full)")
                self._roomWaiters += 1
                try:
                    self._room.wait(min(remaining, 0.5))
                finally:
                    self._roomWaiters -= 1
                if len(self._pending) >= self.window:
                    # A dropped connection answers nothing: restore it.
                    self._state.release()
                    try:
                        self._restoreIfLost(deadline)
                    finally:
                        self._state.acquire()
        with self._lock:
            connection = self._connection
            if connection is None or connection.closed:
                connection = self._connect(deadline)
            seq = self._seq
            self._seq += 1
            pending = self._makeFrame(seq, jpeg, captureTime, metadata)
            with self._state:
                self._pending[seq] = pending
            try:
                self._transmit(connection, pending)
            except _Lost:
                pass  # sent again by whoever reconnects (result() does)
        return pending

    def _restoreIfLost(self, deadline: float) -> None:
        connection = self._connection
        if connection is None or connection.closed:
            self._connect(deadline)

    def _answered(self, pending: PendingFrame) -> None:
        with self._state:
            if self._pending.get(pending.seq) is pending:
                del self._pending[pending.seq]
            self._room.notify_all()

    def _settled(self, answers: list) -> None:
        """
        Settle each C{(pending, outcome)} of C{answers} (a L{Reply} or an
        exception) unless it already is, under one hold of C{_state}, and
        wake whoever waits for an answer or for room in the window.  The
        reader thread's way in: it settles all the ACKs one C{recv} brought
        at once.
        """
        with self._state:
            inFlight = self._pending
            for pending, outcome in answers:
                if pending._outcome is None:
                    pending._outcome = outcome
                    if inFlight.get(pending.seq) is pending:
                        del inFlight[pending.seq]
            if self._changedWaiters:
                self._changed.notify_all()
            if self._roomWaiters:
                self._room.notify_all()

    def _abandon(self, pending: PendingFrame) -> None:
        connection = pending.sentOn
        if connection is not None:
            connection.forget(pending.seq)
        self._answered(pending)

    def flush(self, timeout: float | None = None) -> None:
        """
        Wait until every frame sent so far has been answered.

        @raise TimeoutError: if some frame is still unanswered after
            C{timeout} seconds (the client's default when C{None}).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for pending in self._unanswered():
            pending.result(max(deadline - time.monotonic(), 0))

    def _notify(self, reply: Reply) -> None:
        if self.onReply is not None:
            self.onReply(reply)

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
                deadline = time.monotonic() + self.timeout
                pending = self._submit(jpeg, captureTime, None, deadline)
                try:
                    reply = pending.result(max(deadline - time.monotonic(), 0))
                except TimeoutError:
                    self._abandon(pending)
                    raise
            except (ClientError, TimeoutError, ValueError, TypeError):
                if self._closed:
                    return
                continue
            # Published before onReply, so a callback that reads latest()
            # sees the reply it was called with.
            self._latestOut = reply
            self._notify(reply)

    def close(self, timeout: float | None = None) -> None:
        """
        Wait (up to C{timeout}, the client's default when C{None}) for the
        frames still in flight to be answered, say BYE and close; the
        background sender (if any) stops.
        """
        if not self._closed:
            try:
                self.flush(timeout)
            except (ClientError, TimeoutError):
                pass
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        with self._state:
            self._room.notify_all()
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
    window: int | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> Client:
    """
    Open a named stream to an imageproto receiver.

    @param address: C{"host:port"}, C{"tcp:host:port"}, C{"ssl:host:port"}
        (TLS) or C{(host, port)}.
    @param name: the stream name (1-64 of C{[A-Za-z0-9._-]}).
    @param timeout: the default for L{Client.send}, and for connecting.
    @param live: announce a live source (the server may skip stale frames).
    @param token: a shared token, for receivers started with
        C{--token-file}.
    @param quality: JPEG quality for numpy images.
    @param onReply: called (in the sending thread) with each L{Reply} that
        C{send} waited for.
    @param window: how many frames C{send(..., wait=False)} keeps in flight;
        by default 16, or 8 with C{live} (L{imageproto.wire.defaultWindow}).
    @param ca: verify the server's certificate against this CA file (TLS;
        with C{"ssl:"} and no C{ca}, the system's CAs).
    @param cert: a client certificate file, for receivers that require one.
    @param key: its private key file.
    @raise TimeoutError: if the receiver cannot be reached in C{timeout}.
    @raise ServerRefused: if it refuses the stream.
    """
    return Client(
        address, name, timeout=timeout, live=live, token=token, quality=quality,
        onReply=onReply, window=window, ca=ca, cert=cert, key=key,
    )
