# -*- test-case-name: tests.test_client -*-
"""
Where the blocking client connects and how: L{parseAddress} reads the
addresses a script gives (C{"host:port"}, C{"tcp:host:port"},
C{"ssl:host:port"}), and L{openTransport} opens a plain or TLS stream to it.

TLS runs on an C{ssl.SSLObject} over memory buffers rather than an
C{ssl.SSLSocket}: the client reads in one thread and writes in others, and
OpenSSL does not allow one C{SSL} object to be used by two threads at once,
so every use of it here is under one lock while the socket I/O is not.
"""

from __future__ import annotations

import socket
import ssl
import threading

from attrs import frozen

from imageproto.client.errors import ClientError

__all__ = ["Address", "parseAddress", "tlsContext", "openTransport", "TlsTransport"]

DEFAULT_PORT = 8080


@frozen
class Address:
    """
    Where to connect.

    @ivar tls: whether the address asked for TLS (C{"ssl:host:port"}).
    """

    host: str
    port: int
    tls: bool = False


def parseAddress(address, defaultPort: int = DEFAULT_PORT) -> Address:
    """
    Read C{address}: C{(host, port)}, C{"host:port"}, C{"host"},
    C{"[v6]:port"}, or a client endpoint C{"tcp:host:port"} or
    C{"ssl:host:port"} (also C{"tls:"}, C{"tcp://host:port"}).

    @raise ValueError: if the port is not a number.
    """
    if isinstance(address, Address):
        return address
    if isinstance(address, tuple):
        host, port = address
        return Address(host, int(port))
    text = str(address).strip()
    tls = False
    for prefix, isTls in (("tcp://", False), ("tcp:", False), ("ssl:", True), ("tls:", True)):
        if text.startswith(prefix):
            text, tls = text[len(prefix) :], isTls
            break
    # Endpoint options (":timeout=5") are not ours to read.
    parts = [p for p in text.split(":") if "=" not in p]
    text = ":".join(parts)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or str(defaultPort)
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port = text, str(defaultPort)
    else:
        host, port = text, str(defaultPort)
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad port in address {address!r}") from None
    return Address(host or "localhost", number, tls)


def tlsContext(ca: str | None = None, cert: str | None = None, key: str | None = None):
    """
    A client C{ssl.SSLContext} that verifies the server against C{ca} (or
    the system's CAs) and its host name, presenting C{cert}/C{key} when
    given (mutual TLS).

    @raise ClientError: if a file cannot be loaded, or C{cert} comes without
        C{key}.
    """
    if (cert is None) != (key is None):
        raise ClientError("cert= and key= go together")
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ClientError(f"cannot load TLS files: {e}") from None
    return context


class TlsTransport:
    """
    A TLS stream over a connected socket with the small socket interface
    the client uses (C{sendall}, C{recv}, C{settimeout}, C{shutdown},
    C{close}); safe with one reading thread and several writing ones.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, host: str) -> None:
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=host)
        self._lock = threading.Lock()  # the SSLObject
        self._writeLock = threading.Lock()  # the order of records on the socket
        self._handshake()

    def _flushOut(self) -> None:
        with self._writeLock:
            with self._lock:
                data = self._out.read()
            if data:
                self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 18)
        with self._lock:
            if data:
                self._in.write(data)
            else:
                self._in.write_eof()

    def _handshake(self) -> None:
        while True:
            try:
                with self._lock:
                    self._tls.do_handshake()
                self._flushOut()
                return
            except ssl.SSLWantReadError:
                self._flushOut()
                self._fill()

    def settimeout(self, value) -> None:
        self.sock.settimeout(value)

    def sendall(self, data: bytes) -> None:
        with self._writeLock:
            with self._lock:
                self._tls.write(data)
                out = self._out.read()
            self.sock.sendall(out)

    def recv(self, size: int) -> bytes:
        while True:
            try:
                with self._lock:
                    data = self._tls.read(size)
            except ssl.SSLWantReadError:
                # Reading may have queued records to send (TLS 1.3 key
                # updates); send them before waiting for more.
                self._flushOut()
                self._fill()
                continue
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                return b""
            return data

    def shutdown(self, how) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


def openTransport(address: Address, timeout: float, context=None):
    """
    Connect to C{address}: a plain socket, or a L{TlsTransport} when
    C{context} (an C{ssl.SSLContext}) is given.  C{TCP_NODELAY} is set: a
    frame's last segment should not wait for the previous one's ACK.

    @raise OSError: if it cannot connect; C{ssl.SSLError} if the TLS
        handshake fails.
    """
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is None:
            return sock
        return TlsTransport(sock, context, address.host)
    except BaseException:
        sock.close()
        raise
