# -*- test-case-name: tests.test_imagezmq -*-
"""
A drop-in for imagezmq's C{ImageSender} and C{ImageHub} that runs over
imageproto's protocol: change C{import imagezmq} to
C{from imageproto import imagezmq} and keep the rest of the script.

    sender = imagezmq.ImageSender(connect_to="tcp://hub:5555")
    reply = sender.send_image(socket.gethostname(), image)   # b"OK"

    hub = imagezmq.ImageHub(open_port="tcp://*:5555")
    msg, image = hub.recv_image()
    hub.send_reply(b"OK")

The sender is L{imageproto.client.Client} (reconnection, resending, flow
control, TLS and tokens through extra keyword arguments); the hub is
L{imageproto.hub.Hub}, the real receiver (statistics, limits, C{saveDir}).

What differs from imagezmq, on purpose:

  - Images travel as JPEG: C{send_image} encodes at C{quality} (95 unless
    given), so C{recv_image} returns a decoded, not bit-identical, array.
  - C{msg} travels with each frame as frame metadata (C{{"msg": msg}},
    PROTOCOL.md, Per-frame metadata); a C{msg} that is a valid stream name
    and the same on every call is also the stream's name.  A hub that does
    not take metadata (an old receiver) can only get such a constant name,
    and a C{msg} that cannot travel raises
    L{imageproto.client.MetadataUnsupported}.
  - Connections always go from the sender to the hub.  With C{REQ_REP=False}
    imagezmq's sender binds (C{tcp://*:5555}) and its hub connects; here the
    sender still dials the hub (C{connect_to="tcp://hub:5555"}) and the hub
    listens (C{open_port="tcp://*:5555"}).  Without C{REQ_REP} the sender
    never blocks: the newest frame is sent when the previous one has been
    acknowledged, and older ones are dropped (counted in C{dropped}).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

from imageproto import wire
from imageproto.client import Client, MetadataUnsupported
from imageproto.client.transport import parseAddress

__all__ = ["ImageSender", "ImageHub", "metadataFor", "msgFrom"]

# imagezmq's REQ socket blocks until the hub answers, however long.
_FOREVER = 7 * 24 * 3600.0

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def metadataFor(msg) -> dict:
    """
    The frame metadata carrying imagezmq's C{msg}.
    """
    return {"msg": msg}


def msgFrom(metadata, stream: str):
    """
    C{msg} back from a frame's metadata, or the stream name when the frame
    has none.
    """
    if isinstance(metadata, dict) and "msg" in metadata:
        return metadata["msg"]
    return stream


def _toJpeg(jpg_buffer) -> bytes:
    # cv2.imencode gives a 1-D uint8 array; imagezmq sends any buffer.
    if hasattr(jpg_buffer, "tobytes"):
        return jpg_buffer.tobytes()
    return bytes(jpg_buffer)


def _replyFrom(reply) -> bytes:
    for detection in reply.detections:
        if isinstance(detection, dict) and "reply" in detection:
            return detection["reply"].encode("utf-8", "surrogateescape")
    return b"OK"


def _streamName(msg) -> str | None:
    if isinstance(msg, str) and wire.isStreamName(msg):
        return msg
    return None


def _fallbackName() -> str:
    host = _NAME_CHARS.sub("-", socket.gethostname()).strip("-.") or "host"
    return f"imagezmq-{host}"[:54] + f"-{os.getpid()}"


class ImageSender:
    """
    imagezmq's C{ImageSender} over imageproto.

    @param connect_to: the hub, C{"tcp://host:port"}.
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
        if address.host in ("*", "0.0.0.0", ""):
            raise ValueError(
                f"{connect_to!r} binds; imageproto senders always connect to the hub: "
                "give the hub's address (tcp://HUB:PORT) and open the port with "
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
                if self._closed:
                    return
                (msg, image, captureTime), self._latest = self._latest, None
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
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close(timeout=2)

    def __enter__(self) -> "ImageSender":
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.close()


class ImageHub:
    """
    imagezmq's C{ImageHub} over imageproto: a receiver listening on
    C{open_port}.

    @param open_port: C{"tcp://*:port"} (every interface) or
        C{"tcp://ADDRESS:port"} (that interface).
    @param REQ_REP: C{True}: each sender waits for L{send_reply};
        C{False}: senders never wait.
    @param options: more L{imageproto.listen} keywords (C{saveDir},
        C{statsFile}, C{tokens}, C{queueSize}, ...).
    """

    def __init__(self, open_port="tcp://*:5555", REQ_REP=True, **options) -> None:
        from imageproto.hub import listen

        self.REQ_REP = REQ_REP
        endpoint = self._endpoint(open_port)
        self.hub = listen(endpoint, replies=bool(REQ_REP), **options)
        self._frame = None

    @staticmethod
    def _endpoint(open_port) -> str:
        text = str(open_port)
        if text.startswith("tcp://"):
            text = text[len("tcp://"):]
        host, _, port = text.rpartition(":")
        if host in ("*", "", "0.0.0.0"):
            return f"tcp:{int(port)}"
        return f"tcp:{int(port)}:interface={host.strip('[]')}"

    def connect(self, open_port) -> None:
        """
        imagezmq's hub connects to more PUB senders here; imageproto's
        senders connect to the hub themselves, so there is nothing to do.
        """

    def _next(self):
        if self.REQ_REP and self._frame is not None:
            # A REP socket must answer before it receives again.
            raise RuntimeError("send_reply() must answer the previous frame first (REQ_REP)")
        frame = self.hub.get()
        if self.REQ_REP:
            self._frame = frame
        return msgFrom(frame.metadata, frame.stream), frame

    def recv_image(self, copy=False):
        """
        The next frame, decoded: C{(msg, image)}.
        """
        msg, frame = self._next()
        return msg, frame.image()

    def recv_jpg(self, copy=False):
        """
        The next frame as sent: C{(msg, jpg_buffer)}.
        """
        msg, frame = self._next()
        return msg, frame.jpeg

    def send_reply(self, reply_message=b"OK") -> None:
        """
        Answer the last frame received (C{REQ_REP}): its sender's
        C{send_image}/C{send_jpg} returns C{reply_message}.
        """
        frame, self._frame = self._frame, None
        if frame is None:
            return
        if isinstance(reply_message, str):
            reply_message = reply_message.encode("utf-8")
        text = bytes(reply_message).decode("utf-8", "surrogateescape")
        frame.reply([{"reply": text}])

    def close(self) -> None:
        """
        Stop the receiver.
        """
        self.hub.close()

    def __enter__(self) -> "ImageHub":
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.close()
