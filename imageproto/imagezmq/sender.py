# -*- test-case-name: tests.test_imagezmq -*-
"""
L{ImageSender}: imagezmq's sender over imageproto.
"""

from __future__ import annotations

import threading
import time

from imageproto.client import Client, MetadataUnsupported
from imageproto.client.transport import parseAddress
from imageproto.imagezmq.messages import _FOREVER, _fallbackName, _replyFrom, _streamName, _toJpeg, metadataFor
from imageproto.imagezmq.publisher import _Publisher

class ImageSender:
    """
    imagezmq's C{ImageSender} over imageproto.

    @param connect_to: the hub, C{"tcp://host:port"}; with
        C{REQ_REP=False}, C{"tcp://*:port"} (or an address of this
        machine) to bind, as imagezmq's PUB sender does, and have hubs
        connect.
    @param REQ_REP: C{True}: each send waits for the hub's C{send_reply}
        and returns it; C{False}: sends never wait (see the module doc).
    @param name: the stream name; by default C{msg} when it is a valid name
        and constant, else C{imagezmq-<host>-<pid>}.
    @param quality: JPEG quality of C{send_image}.
    @param options: more L{imageproto.connect} keywords (C{token}, C{ca},
        C{cert}, C{key}, C{timeout}, C{window}).
    """

    def __init__(self, connect_to="tcp://127.0.0.1:5555", REQ_REP=True, *, name=None,
                 quality: int = 95, **options) -> None:
        address = parseAddress(connect_to)
        wildcard = address.host in ("*", "0.0.0.0", "")
        if wildcard and REQ_REP:
            raise ValueError(
                f"{connect_to!r} binds; a REQ_REP sender connects to the hub: give the "
                "hub's address (tcp://HUB:PORT) and open the port with "
                "ImageHub(open_port='tcp://*:PORT')"
            )
        self.address = address
        self.REQ_REP = REQ_REP
        self.quality = quality
        self.dropped = 0
        self._name = name
        self._options = options
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._closed = False
        # PUB/SUB: the newest (msg, image-or-jpeg, captureTime) to send.
        self._latest = None
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        #: PUB/SUB with a bind address: the L{_Publisher} hubs connect to
        #: (C{None} when this sender dials a listening hub).
        self.publisher: _Publisher | None = None
        tls = address.tls or any(options.get(k) for k in ("ca", "cert", "key", "tls"))
        if wildcard and tls:
            raise ValueError(
                f"{connect_to!r} binds, and a binding sender takes plain TCP: drop the TLS "
                "options, or give the hub's address (and let the hub listen)"
            )
        if not REQ_REP and not tls:
            self.publisher = _Publisher.bind(self, address, required=wildcard)

    # -- the connection ---------------------------------------------------------

    def _open(self, msg, timeout: float) -> Client:
        with self._lock:
            if self._client is None:
                name = self._name or _streamName(msg) or _fallbackName()
                options = dict(self._options)
                options.setdefault("timeout", timeout)
                options.setdefault("window", 1 if self.REQ_REP else 8)
                self._client = Client(self.address, name, live=not self.REQ_REP, **options)
                self._name = name
            return self._client

    def _metadata(self, client: Client, msg):
        """
        The metadata to send C{msg} with, or C{None} when the stream name
        carries it.

        @raise MetadataUnsupported: if it must travel per frame and cannot.
        """
        if client.metadata:
            return metadataFor(msg)
        if msg == client.name:
            return None
        raise MetadataUnsupported(
            f"msg {msg!r} cannot travel: this hub does not take per-frame metadata, so "
            f"msg must be the stream name {client.name!r} on every call (a constant name "
            "of letters, digits, '.', '_' and '-')"
        )

    # -- REQ/REP ----------------------------------------------------------------

    def _sendAndWait(self, msg, image) -> bytes:
        captureTime = time.time()
        timeout = self._options.get("timeout", _FOREVER)
        client = self._open(msg, timeout)
        reply = client.send(
            image, timeout=timeout, captureTime=captureTime,
            metadata=self._metadata(client, msg), quality=self.quality,
        )
        return _replyFrom(reply)

    # -- PUB/SUB ----------------------------------------------------------------

    def _offer(self, msg, image) -> None:
        if self._closed:
            raise ValueError("the sender is closed")
        if hasattr(image, "copy") and not isinstance(image, bytes):
            image = image.copy()  # the caller may reuse its buffer
        with self._wake:
            if self._latest is not None:
                self.dropped += 1
            self._latest = (msg, image, time.time())
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._sendLoop, name="imagezmq-sender", daemon=True
                )
                self._worker.start()
            self._wake.notify()

    def _sendLoop(self) -> None:
        while True:
            with self._wake:
                while self._latest is None and not self._closed:
                    self._wake.wait()
                if self._closed and (self._latest is None or self.publisher is None):
                    return
                (msg, image, captureTime), self._latest = self._latest, None
            if self.publisher is not None:
                self.publisher.publish(msg, image, captureTime)
                continue
            try:
                client = self._open(msg, self._options.get("timeout", 10.0))
                client.send(
                    image, captureTime=captureTime, metadata=self._metadata(client, msg),
                    quality=self.quality,
                )
            except (OSError, TimeoutError, ValueError, TypeError) as e:
                # Like a PUB socket with no subscriber: the frame is gone.
                self.dropped += 1
                if isinstance(e, MetadataUnsupported):
                    self.error = e
                if self._closed:
                    return
                time.sleep(0.05)
            except Exception:
                self.dropped += 1
                if self._closed:
                    return

    error: Exception | None = None

    # -- imagezmq's API ---------------------------------------------------------

    def send_image(self, msg, image):
        """
        Send C{image} (a numpy array, JPEG-encoded here) with C{msg}.

        @return: the hub's reply (bytes) with C{REQ_REP}, else C{None}.
        """
        if self.REQ_REP:
            return self._sendAndWait(msg, image)
        self._offer(msg, image)
        return None

    def send_jpg(self, msg, jpg_buffer):
        """
        Send JPEG bytes (or the array C{cv2.imencode} returns) with C{msg}.

        @return: the hub's reply (bytes) with C{REQ_REP}, else C{None}.
        """
        jpeg = _toJpeg(jpg_buffer)
        if self.REQ_REP:
            return self._sendAndWait(msg, jpeg)
        self._offer(msg, jpeg)
        return None

    def close(self) -> None:
        """
        Close the connection (after the frames in flight are answered).
        """
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(5)
        if self.publisher is not None:
            self.publisher.close()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close(timeout=2)

    def __enter__(self) -> "ImageSender":
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.close()
