# -*- test-case-name: tests.test_imagezmq -*-
"""
The PUB side in imagezmq's direction: a sender that binds accepts each hub
and feeds it its own L{imageproto.client.Client} on the accepted socket
(L{_Publisher}, one L{_Subscriber} thread per hub), dropping frames a slow
hub cannot take.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time

from imageproto.client import Client, ClientError, MetadataUnsupported
from imageproto.client.frames import encodeFrame
from imageproto.imagezmq.messages import _fallbackName, _streamName


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

    def __init__(self, sender, listener: socket.socket) -> None:
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
    def bind(cls, sender, address, required: bool) -> "_Publisher | None":
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
