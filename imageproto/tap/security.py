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
C{optParameters} and calls C{check*Options} from C{postOptions}; its config's
C{fromOptions} builds the typed configs here (L{SecurityConfig} and
L{LimitsConfig}, L{SenderSecurityConfig} and L{SenderLimitsConfig}), which
the other helpers apply when the tap builds its services.
"""

from __future__ import annotations

from attrs import field, frozen
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
from imageproto.tap import checks

__all__ = [
    "RECEIVER_OPTIONS",
    "SENDER_OPTIONS",
    "SecurityConfig",
    "LimitsConfig",
    "SenderSecurityConfig",
    "SenderLimitsConfig",
    "TlsConfig",
    "checkReceiverOptions",
    "checkSenderOptions",
    "receiverSecurity",
    "receiverLimits",
    "senderSecurity",
    "senderLimits",
    "applyToReceiverFactory",
    "applyToSenderFactory",
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

_RECEIVER_CHECKS = [
    ("max-connections", checks.number(int, 1)),
    ("handshake-timeout", checks.number(float, 0.001)),
    ("idle-timeout", checks.number(float, 0)),
    # WELCOME carries the heartbeat in 16 bits.
    ("heartbeat", checks.number(int, 0, 0xFFFF)),
    ("max-peer-buffer", checks.number(int, 1)),
    ("max-buffered-bytes", checks.number(int, 1)),
    ("token-file", checks.existingFile),
    ("client-ca", checks.existingFile),
]

_SENDER_CHECKS = [
    ("handshake-timeout", checks.number(float, 0.001)),
    ("idle-timeout", checks.number(float, 0)),
    ("heartbeat", checks.number(float, 0)),
    ("token-file", checks.existingFile),
    ("ca-cert", checks.existingFile),
    ("client-cert", checks.existingFile),
    ("client-key", checks.existingFile),
]


@frozen
class SecurityConfig:
    """
    Who may send to the receiver.

    @ivar tokens: the L{TokenTable} of C{--token-file}, or C{None} (no
        token required).
    @ivar clientCA: the absolute path of C{--client-ca} (client
        certificates required), or C{None}.
    """

    tokens: TokenTable | None = None
    clientCA: str | None = None


@frozen
class LimitsConfig:
    """
    The receiver's limits on each connection (see
    L{imageproto.protocol.limits}).

    @ivar idleTimeout: seconds a sender may be silent; 0 for never.
    @ivar heartbeat: seconds between PINGs; 0 for none.
    """

    maxConnections: int = DEFAULT_MAX_CONNECTIONS
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT
    heartbeat: int = DEFAULT_HEARTBEAT
    maxPeerBuffer: int = DEFAULT_MAX_PEER_BUFFER
    maxBufferedBytes: int = DEFAULT_MAX_BUFFERED_BYTES


@frozen
class TlsConfig:
    """
    Verified TLS around the sender's tcp: connection: absolute paths of the
    CA certificate and of the optional client certificate and its key.
    """

    caCert: str
    clientCert: str | None = None
    clientKey: str | None = None


@frozen
class SenderSecurityConfig:
    """
    How the sender proves itself and checks the receiver.

    @ivar token: the token of C{--token-file}, or C{None}.
    @ivar tls: a L{TlsConfig}, or C{None} for a plain connection.
    """

    token: bytes | None = field(default=None, repr=False)
    tls: TlsConfig | None = None


@frozen
class SenderLimitsConfig:
    """
    The sender's liveness settings.

    @ivar idleTimeout: seconds the receiver may be silent; C{None} for
        three of its heartbeats, 0 for never.
    @ivar heartbeat: seconds between PINGs when the receiver announces no
        heartbeat; 0 for never.
    """

    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idleTimeout: float | None = None
    heartbeat: float = 0


def checkReceiverOptions(options) -> None:
    """
    Check and convert the receiver's security options in place (numbers,
    absolute paths); C{--port} must have been checked already.

    @raise usage.UsageError: naming the option at fault.
    """
    checks.apply(options, _RECEIVER_CHECKS)
    if 0 < options["idle-timeout"] <= options["heartbeat"]:
        raise usage.UsageError(
            "--idle-timeout must be longer than --heartbeat, or a healthy "
            "sender is dropped between two PINGs"
        )
    if options["client-ca"] is not None:
        kind, _, _ = parseEndpointString(options["port"])
        if kind != "ssl":
            raise usage.UsageError(
                "--client-ca needs a TLS --port such as "
                "ssl:8443:privateKey=key.pem:certKey=cert.pem"
            )


def receiverSecurity(options) -> SecurityConfig:
    """
    The L{SecurityConfig} of checked receiver options, reading the token
    file.

    @raise usage.UsageError: if the token file is malformed.
    """
    tokens = None
    if options["token-file"] is not None:
        try:
            tokens = TokenTable.fromFile(options["token-file"])
        except TokenFileError as e:
            raise usage.UsageError(str(e)) from None
    return SecurityConfig(tokens=tokens, clientCA=options["client-ca"])


def receiverLimits(options) -> LimitsConfig:
    """
    The L{LimitsConfig} of checked receiver options.
    """
    return LimitsConfig(
        maxConnections=options["max-connections"],
        handshakeTimeout=options["handshake-timeout"],
        idleTimeout=options["idle-timeout"],
        heartbeat=options["heartbeat"],
        maxPeerBuffer=options["max-peer-buffer"],
        maxBufferedBytes=options["max-buffered-bytes"],
    )


def receiverEndpoint(port: str, security: SecurityConfig, reactor):
    """
    The receiver's listening endpoint: C{port} (a server endpoint
    description), requiring client certificates when C{security} says so.

    @raise usage.UsageError: if a certificate or key cannot be loaded.
    """
    try:
        return serverEndpoint(reactor, port, security.clientCA)
    except TLSConfigError as e:
        raise usage.UsageError(str(e)) from None


def applyToReceiverFactory(factory, security: SecurityConfig, limits: LimitsConfig) -> None:
    """
    Set the token table and limits on a
    L{imageproto.protocol.factories.ReceiverFactory}.
    """
    factory.tokens = security.tokens
    factory.maxConnections = limits.maxConnections
    factory.handshakeTimeout = limits.handshakeTimeout
    factory.idleTimeout = limits.idleTimeout or None
    factory.heartbeat = limits.heartbeat
    if factory.heartbeat:
        factory.capabilities |= SCAP_HEARTBEAT
    else:
        factory.capabilities &= ~SCAP_HEARTBEAT
    # One frame must always fit, or a peer could never make progress.
    factory.maxPeerBuffer = max(limits.maxPeerBuffer, factory.maxMessageBytes)
    # Likewise one whole message (and its 4-byte prefix) across connections.
    factory.bufferBudget = BufferBudget(
        max(limits.maxBufferedBytes, factory.maxMessageBytes + 4)
    )


def checkSenderOptions(options) -> None:
    """
    Check and convert the sender's security options in place (numbers,
    absolute paths); C{--connect} must have been settled already.

    @raise usage.UsageError: naming the option at fault.
    """
    checks.apply(options, _SENDER_CHECKS)
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


def senderSecurity(options) -> SenderSecurityConfig:
    """
    The L{SenderSecurityConfig} of checked sender options, reading the
    token.

    @raise usage.UsageError: if the token file holds no usable token.
    """
    token = None
    if options["token-file"] is not None:
        try:
            token = readSenderToken(options["token-file"])
        except TokenFileError as e:
            raise usage.UsageError(str(e)) from None
    tls = None
    if options["ca-cert"] is not None:
        tls = TlsConfig(options["ca-cert"], options["client-cert"], options["client-key"])
    return SenderSecurityConfig(token=token, tls=tls)


def senderLimits(options) -> SenderLimitsConfig:
    """
    The L{SenderLimitsConfig} of checked sender options.
    """
    return SenderLimitsConfig(
        handshakeTimeout=options["handshake-timeout"],
        idleTimeout=options["idle-timeout"],
        heartbeat=options["heartbeat"],
    )


def senderEndpoint(connect: str, security: SenderSecurityConfig, reactor):
    """
    The sender's client endpoint: C{connect}, wrapped in verified TLS when
    C{security.tls} is set (the host name checked is C{connect}'s host).

    @raise usage.UsageError: if a certificate or key cannot be loaded.
    """
    from twisted.internet.endpoints import clientFromString, wrapClientTLS

    endpoint = clientFromString(reactor, connect)
    tls = security.tls
    if tls is None:
        return endpoint
    kind, args, kwargs = parseEndpointString(connect)
    host = args[0] if args else kwargs.get("host", "localhost")
    try:
        creator = clientCreator(host, tls.caCert, tls.clientCert, tls.clientKey)
    except TLSConfigError as e:
        raise usage.UsageError(str(e)) from None
    return wrapClientTLS(creator, endpoint)


def applyToSenderFactory(
    factory, security: SenderSecurityConfig, limits: SenderLimitsConfig
) -> None:
    """
    Set the token and liveness settings on a
    L{imageproto.protocol.factories.SenderFactory}.
    """
    factory.token = security.token
    factory.handshakeTimeout = limits.handshakeTimeout
    factory.idleTimeout = limits.idleTimeout
    factory.heartbeat = limits.heartbeat
