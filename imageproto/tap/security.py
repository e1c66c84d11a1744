# -*- test-case-name: tests.test_security -*-
"""
The security and reliability options of both twistd commands, in one place
so each tap adds them with a few lines:

Receiver (C{twistd imageproto}): C{--token-file}, C{--client-ca},
C{--max-connections}, C{--handshake-timeout}, C{--idle-timeout},
C{--heartbeat}, C{--max-peer-buffer}, C{--max-buffered-bytes}.

Sender (C{twistd imageproto-sender}): C{--token-file}, C{--ca-cert},
C{--client-cert}, C{--client-key}, C{--handshake-timeout},
C{--idle-timeout}, C{--heartbeat}.

Each tap lists C{RECEIVER_OPTIONS}/C{SENDER_OPTIONS} in its
C{optParameters}, calls C{check*Options} from C{postOptions}, and applies
the result with the other helpers when it builds its services.
"""

from __future__ import annotations

import os

from twisted.python import usage

from imageproto.wire import SCAP_HEARTBEAT
from imageproto.protocol.tokens import TokenFileError, TokenTable, readSenderToken
from imageproto.protocol.limits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_BUFFERED_BYTES,
    BufferBudget,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PEER_BUFFER,
)
from imageproto.protocol.tls import TLSConfigError, clientCreator, parseEndpointString, serverEndpoint

__all__ = [
    "RECEIVER_OPTIONS",
    "SENDER_OPTIONS",
    "applyToReceiverFactory",
    "applyToSenderFactory",
    "checkReceiverOptions",
    "checkSenderOptions",
    "receiverEndpoint",
    "senderEndpoint",
]

RECEIVER_OPTIONS = [
    ["token-file", None, None,
     "Require senders to prove a token from this file: one '<token> "
     "<stream-glob>...' per line, '#' comments (see README, Security)."],
    ["client-ca", None, None,
     "Require a client certificate signed by this CA (PEM); needs an ssl: "
     "--port such as ssl:8443:privateKey=key.pem:certKey=cert.pem."],
    ["max-connections", None, DEFAULT_MAX_CONNECTIONS,
     "Connections over this are refused with ERROR 10 (busy)."],
    ["handshake-timeout", None, DEFAULT_HANDSHAKE_TIMEOUT,
     "Seconds a new connection has to complete HELLO (and AUTH)."],
    ["idle-timeout", None, DEFAULT_IDLE_TIMEOUT,
     "Drop a sender silent this many seconds (0: never)."],
    ["heartbeat", None, DEFAULT_HEARTBEAT,
     "Seconds between PINGs to each sender, announced in WELCOME (0: none)."],
    ["max-peer-buffer", None, DEFAULT_MAX_PEER_BUFFER,
     "Bytes of one sender's frames held before they are stored; over it, "
     "reading from that sender pauses until storage catches up."],
    ["max-buffered-bytes", None, DEFAULT_MAX_BUFFERED_BYTES,
     "Bytes of partly received frames held across all senders; a sender "
     "whose next frame does not fit waits (reads paused, first come first "
     "served) until others complete. Before its handshake a peer may send "
     "only messages of a few KiB."],
]

SENDER_OPTIONS = [
    ["token-file", None, None,
     "Prove the token in this file (its first token) when the receiver "
     "asks."],
    ["ca-cert", None, None,
     "Connect with TLS and verify the receiver's certificate against this "
     "CA (PEM) and the host name."],
    ["client-cert", None, None,
     "With --ca-cert: present this client certificate (PEM)."],
    ["client-key", None, None, "The private key of --client-cert (PEM)."],
    ["handshake-timeout", None, DEFAULT_HANDSHAKE_TIMEOUT,
     "Seconds the receiver has to answer HELLO before we reconnect."],
    ["idle-timeout", None, None,
     "Reconnect when the receiver is silent this many seconds [default: "
     "three of its heartbeats; 0: never]."],
    ["heartbeat", None, 0,
     "Ping a receiver that announces no heartbeat every this many seconds "
     "(0: never)."],
]


def _number(options, name: str, kind: type, minimum, allowNone=False) -> None:
    raw = options[name]
    if raw is None and allowNone:
        return
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        value = None
    if value is None or value != value or value < minimum or value == float("inf"):
        raise usage.UsageError(f"--{name} {raw}: must be a number, at least {minimum}")
    options[name] = value


def _file(options, name: str) -> None:
    if options[name] is not None:
        path = options[name] = os.path.abspath(options[name])
        if not os.path.isfile(path):
            raise usage.UsageError(f"--{name} {path}: no such file")


def checkReceiverOptions(options) -> None:
    """
    Check and convert the receiver's security options in place; parse the
    token file into C{options["tokens"]} (a L{TokenTable} or C{None}).

    @raise usage.UsageError: naming the option at fault.
    """
    _number(options, "max-connections", int, 1)
    _number(options, "handshake-timeout", float, 0.001)
    _number(options, "idle-timeout", float, 0)
    _number(options, "heartbeat", int, 0)
    _number(options, "max-peer-buffer", int, 1)
    _number(options, "max-buffered-bytes", int, 1)
    if options["heartbeat"] > 0xFFFF:
        raise usage.UsageError("--heartbeat: at most 65535 seconds")
    if 0 < options["idle-timeout"] <= options["heartbeat"]:
        raise usage.UsageError(
            "--idle-timeout must be longer than --heartbeat, or a healthy "
            "sender is dropped between two PINGs"
        )
    for name in ("token-file", "client-ca"):
        _file(options, name)
    options["tokens"] = None
    if options["token-file"] is not None:
        try:
            options["tokens"] = TokenTable.fromFile(options["token-file"])
        except TokenFileError as e:
            raise usage.UsageError(str(e)) from None
    if options["client-ca"] is not None:
        kind, _, _ = parseEndpointString(options["port"])
        if kind != "ssl":
            raise usage.UsageError(
                "--client-ca needs a TLS --port such as "
                "ssl:8443:privateKey=key.pem:certKey=cert.pem"
            )


def receiverEndpoint(options, reactor):
    """
    The receiver's listening endpoint: C{--port}, with C{--client-ca}
    requiring client certificates.

    @raise usage.UsageError: if a certificate or key cannot be loaded.
    """
    try:
        return serverEndpoint(reactor, options["port"], options.get("client-ca"))
    except TLSConfigError as e:
        raise usage.UsageError(str(e)) from None


def applyToReceiverFactory(factory, options) -> None:
    """
    Set the limits and token table from checked C{options} on a
    L{imageproto.protocol.factories.ReceiverFactory}.
    """
    get = options.get
    factory.tokens = get("tokens")
    factory.maxConnections = get("max-connections", DEFAULT_MAX_CONNECTIONS)
    factory.handshakeTimeout = get("handshake-timeout", DEFAULT_HANDSHAKE_TIMEOUT)
    factory.idleTimeout = get("idle-timeout", DEFAULT_IDLE_TIMEOUT) or None
    factory.heartbeat = get("heartbeat", DEFAULT_HEARTBEAT)
    if factory.heartbeat:
        factory.capabilities |= SCAP_HEARTBEAT
    else:
        factory.capabilities &= ~SCAP_HEARTBEAT
    # One frame must always fit, or a peer could never make progress.
    factory.maxPeerBuffer = max(
        get("max-peer-buffer", DEFAULT_MAX_PEER_BUFFER), factory.maxMessageBytes
    )
    # Likewise one whole message (and its 4-byte prefix) across connections.
    factory.bufferBudget = BufferBudget(
        max(get("max-buffered-bytes", DEFAULT_MAX_BUFFERED_BYTES), factory.maxMessageBytes + 4)
    )


def checkSenderOptions(options) -> None:
    """
    Check and convert the sender's security options in place; read the
    token into C{options["token"]} (bytes or C{None}).

    @raise usage.UsageError: naming the option at fault.
    """
    _number(options, "handshake-timeout", float, 0.001)
    _number(options, "idle-timeout", float, 0, allowNone=True)
    _number(options, "heartbeat", float, 0)
    for name in ("token-file", "ca-cert", "client-cert", "client-key"):
        _file(options, name)
    if (options["client-cert"] is None) != (options["client-key"] is None):
        raise usage.UsageError("--client-cert and --client-key go together")
    if options["client-cert"] is not None and options["ca-cert"] is None:
        raise usage.UsageError("--client-cert needs --ca-cert (TLS)")
    if options["ca-cert"] is not None:
        kind, args, kwargs = parseEndpointString(options["connect"])
        if kind != "tcp":
            raise usage.UsageError(
                "--ca-cert wraps a tcp: --connect (or --host/--port) in TLS; "
                "for other endpoints use --connect tls:HOST:PORT:trustRoots=DIR"
            )
    options["token"] = None
    if options["token-file"] is not None:
        try:
            options["token"] = readSenderToken(options["token-file"])
        except TokenFileError as e:
            raise usage.UsageError(str(e)) from None


def senderEndpoint(options, reactor):
    """
    The sender's client endpoint: C{--connect}, wrapped in verified TLS when
    C{--ca-cert} is given (the host name checked is C{--connect}'s host).

    @raise usage.UsageError: if a certificate or key cannot be loaded.
    """
    from twisted.internet.endpoints import clientFromString, wrapClientTLS

    endpoint = clientFromString(reactor, options["connect"])
    if options.get("ca-cert") is None:
        return endpoint
    kind, args, kwargs = parseEndpointString(options["connect"])
    host = args[0] if args else kwargs.get("host", "localhost")
    try:
        creator = clientCreator(
            host, options["ca-cert"], options.get("client-cert"), options.get("client-key")
        )
    except TLSConfigError as e:
        raise usage.UsageError(str(e)) from None
    return wrapClientTLS(creator, endpoint)


def applyToSenderFactory(factory, options) -> None:
    """
    Set the token and liveness settings from checked C{options} on a
    L{imageproto.protocol.factories.SenderFactory}.
    """
    get = options.get
    factory.token = get("token")
    factory.handshakeTimeout = get("handshake-timeout", DEFAULT_HANDSHAKE_TIMEOUT)
    factory.idleTimeout = get("idle-timeout")
    factory.heartbeat = get("heartbeat", 0)
