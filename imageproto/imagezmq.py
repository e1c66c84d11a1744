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
  - A sender given a specific address with C{REQ_REP=False} binds it
    only if it can: when a hub already listens there (the drop-in's own
    direction, below) or the address is not this machine's, it dials it.
    Binding takes plain TCP: with TLS options (C{ca}, C{cert}) the sender
    dials, and C{tcp://*:PORT} with them raises C{ValueError}.  A REQ_REP
    sender always dials the hub.

PUB/SUB (C{REQ_REP=False}) goes as in imagezmq: the sender binds and each
hub connects to it, reconnecting with backoff while the sender is not up
and whenever it restarts; C{hub.connect(...)} subscribes to more senders.

    sender = imagezmq.ImageSender(connect_to="tcp://*:5555", REQ_REP=False)
    sender.send_image(name, image)                           # None, at once

    hub = imagezmq.ImageHub(open_port="tcp://SENDER:5555", REQ_REP=False)
    msg, image = hub.recv_image()

The protocol's roles do not change with the TCP direction: on each
connection it accepted the sender is still the imageproto sender (it says
HELLO: L{imageproto.client.Client} on the accepted socket), and the hub the
receiver (the real C{FrameReceiverProtocol} of the hub's C{ReceiverService},
so statistics, limits, tokens and C{saveDir} apply).  As with a PUB socket,
a hub gets the frames sent after it connected, and a hub that falls behind
loses frames rather than slowing the sender or the other hubs (counted in
the sender's C{dropped}): C{send_image} never blocks.  The drop-in's own
direction also works: a hub listening on C{tcp://*:5555} gets the frames of
a C{REQ_REP=False} sender given its address, the newest frame being sent
once the previous one is acknowledged.
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import threading
import time

from imageproto import wire
from imageproto.client import Client, ClientError, MetadataUnsupported
from imageproto.client.frames import encodeFrame
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


def _hungUp(sock: socket.socket) -> bool:
    """
    Whether the peer of C{sock}, which has sent nothing yet, closed it.
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and not sock.recv(1, socket.MSG_PEEK)
    except (OSError, ValueError):
        return True


class _Subscriber:
    """
    One hub connected to a binding L{ImageSender}: on the accepted socket it
    is the imageproto sender (L{Client} with C{sock=}: HELLO ... WELCOME,
    then live frames), with a slot of its own holding the newest frame, so a
    slow hub loses frames and holds back neither the publisher nor the
    other hubs.
    """

    def __init__(self, publisher: "_Publisher", sock: socket.socket, peer) -> None:
        self.publisher = publisher
        self.sock = sock
        self.peer = peer
        self.client: Client | None = None
        self.dropped = 0
        self._latest = None
        self._closing = False
        self._wake = threading.Condition()
        self.thread = threading.Thread(
            target=self._run, name=f"imagezmq-publisher-{peer[0]}:{peer[1]}", daemon=True
        )
        self.thread.start()

    def offer(self, item) -> None:
        with self._wake:
            if self._latest is not None:
                self.dropped += 1
                self.publisher.sender.dropped += 1
            self._latest = item
            self._wake.notify()

    def _open(self):
        sender = self.publisher.sender
        options = dict(sender._options)
        options.setdefault("timeout", 10.0)
        options.setdefault("window", 4)
        self.client = Client(self.peer, sender._name, live=True, sock=self.sock, **options)
        return self.client

    def _gone(self) -> bool:
        """
        Whether the hub went away while no frame was to be sent: it hung
        up before HELLO (a hub waiting for the first frame, which names the
        stream, gives up and connects again), or the welcomed connection
        closed.
        """
        client = self.client
        if client is None:
            return _hungUp(self.sock)
        connection = client._connection
        return connection is None or connection.closed

    def _run(self) -> None:
        sender = self.publisher.sender
        try:
            if sender._name is not None:
                self._open()  # the stream's name is known: say HELLO now
            while True:
                with self._wake:
                    while self._latest is None and not self._closing:
                        self._wake.wait(0.5)
                        if self._latest is None and self._gone():
                            return
                    if self._latest is None:
                        return
                    (msg, jpeg, captureTime), self._latest = self._latest, None
                client = self.client or self._open()
                try:
                    # Returns once the frame is written: up to the window of
                    # frames in flight, the rest wait in the slot.
                    client.send(
                        jpeg, wait=False, captureTime=captureTime,
                        metadata=sender._metadata(client, msg),
                    )
                except TimeoutError:
                    # The hub has not read for the whole timeout: this
                    # frame is lost, the next one may go.
                    self.dropped += 1
                    sender.dropped += 1
        except MetadataUnsupported as e:
            sender.error = e
        except (OSError, ClientError, ValueError, TypeError):
            pass  # this hub went away (or never finished its handshake)
        finally:
            self.publisher._remove(self)
            client = self.client
            if client is None:
                try:
                    self.sock.close()
                except OSError:
                    pass
            elif self._closing:
                client.close(timeout=2)
            else:
                client.close(timeout=0)

    def close(self) -> None:
        """
        Send the frame waiting in the slot, then say BYE and close.
        """
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self.thread.join(2)
        if self.thread.is_alive():
            # A hub that stopped reading: unblock the write to it.
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.thread.join(2)


class _Publisher:
    """
    imagezmq's PUB side: a listening socket; every hub that connects gets
    its own L{_Subscriber} and, from then on, every frame published (PUB
    semantics: a hub that connects late misses earlier frames).
    """

    def __init__(self, sender: ImageSender, listener: socket.socket) -> None:
        self.sender = sender
        self.listener = listener
        self.port = listener.getsockname()[1]
        self.subscribers: list[_Subscriber] = []
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(
            target=self._accept, name="imagezmq-publisher-accept", daemon=True
        )
        self._acceptor.start()

    @classmethod
    def bind(cls, sender: ImageSender, address, required: bool) -> "_Publisher | None":
        """
        Listen on C{address} as imagezmq's PUB socket binds, or return
        C{None} when C{address} is not this machine's or a hub already
        listens there (then the sender dials that hub).

        @param required: the address is a wildcard (C{*}, C{0.0.0.0}):
            failing to listen raises.
        """
        host = "" if required else address.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            listener = socket.create_server((host, address.port), family=family, backlog=16)
        except OSError as e:
            if required:
                raise
            if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                return None
            if isinstance(e, socket.gaierror):
                return None
            raise
        listener.settimeout(0.2)
        return cls(sender, listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._closed:
                    return
                time.sleep(0.05)
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self.subscribers.append(_Subscriber(self, sock, peer[:2]))

    def _remove(self, subscriber: _Subscriber) -> None:
        with self._lock:
            if subscriber in self.subscribers:
                self.subscribers.remove(subscriber)

    def publish(self, msg, image, captureTime: float) -> None:
        """
        Give a frame to every hub connected now (encoded once; none when
        no hub is connected, like a PUB socket without subscribers).
        """
        with self._lock:
            subscribers = list(self.subscribers)
        if not subscribers:
            return
        sender = self.sender
        if sender._name is None:
            sender._name = _streamName(msg) or _fallbackName()
        try:
            jpeg = encodeFrame(image, sender.quality)
        except (ValueError, TypeError) as e:
            sender.error = e
            return
        for subscriber in subscribers:
            subscriber.offer((msg, jpeg, captureTime))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            subscribers, self.subscribers = list(self.subscribers), []
        self._acceptor.join(2)
        self.listener.close()
        for subscriber in subscribers:
            subscriber.close()


class ImageHub:
    """
    imagezmq's C{ImageHub} over imageproto: the receiver.

    @param open_port: C{"tcp://*:port"}: listen on every interface for
        senders that dial the hub; with C{REQ_REP=True},
        C{"tcp://ADDRESS:port"} listens on that interface.  With
        C{REQ_REP=False}, C{"tcp://HOST:port"} connects to the publishing
        sender there (imagezmq's SUB socket), reconnecting while it is not
        up and whenever it restarts.
    @param REQ_REP: C{True}: each sender waits for L{send_reply};
        C{False}: senders never wait.
    @param options: more L{imageproto.listen} keywords (C{saveDir},
        C{statsFile}, C{tokens}, C{queueSize}, ...).
    """

    def __init__(self, open_port="tcp://*:5555", REQ_REP=True, **options) -> None:
        from imageproto.hub import listen

        self.REQ_REP = REQ_REP
        self._frame = None
        if not REQ_REP and not self._wildcard(open_port):
            # imagezmq's SUB socket: connect to the publisher.
            self.hub = listen(None, replies=False, **options)
            try:
                self.hub.connect(open_port)
            except BaseException:
                self.hub.close()
                raise
            return
        endpoint = self._endpoint(open_port)
        self.hub = listen(endpoint, replies=bool(REQ_REP), **options)

    @staticmethod
    def _wildcard(open_port) -> bool:
        return parseAddress(open_port).host in ("*", "", "0.0.0.0")

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
        With C{REQ_REP=False}, also receive from the publishing sender at
        C{open_port} (C{"tcp://HOST:port"}), as imagezmq's SUB hub
        subscribes to several PUB senders.  With C{REQ_REP} senders connect
        to the hub themselves, so there is nothing to do.
        """
        if not self.REQ_REP:
            self.hub.connect(open_port)

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
