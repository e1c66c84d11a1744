# -*- test-case-name: tests.test_tls -*-
"""
TLS for both ends, built from PEM files.

The receiver listens through a Twisted endpoint string, so plain TLS needs
nothing from here::

    twistd -n imageproto --port ssl:8443:privateKey=key.pem:certKey=cert.pem

Mutual TLS (the receiver requires a client certificate signed by a given CA)
is not expressible in Twisted's C{ssl:} string, so L{serverEndpoint} reads the
same string and builds the endpoint itself when C{clientCA} is given.

The sender verifies the receiver's certificate against a CA file and the
host name it connects to (Twisted with C{service_identity}), and may present
a client certificate: L{clientCreator}.
"""

from __future__ import annotations

from twisted.internet import ssl
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.logger import Logger

__all__ = [
    "TLSConfigError",
    "clientCreator",
    "parseEndpointString",
    "peerCertificateSubject",
    "serverEndpoint",
]

log = Logger()


class TLSConfigError(ValueError):
    """
    A certificate, key or CA file that cannot be used, or options that do not
    fit together; the message says which.
    """


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"cannot read {what} {path}: {e}") from None


def _certificate(path: str, what: str) -> ssl.Certificate:
    try:
        return ssl.Certificate.loadPEM(_read(path, what))
    except TLSConfigError:
        raise
    except Exception as e:
        raise TLSConfigError(f"{what} {path} is not a PEM certificate: {e}") from None


def _privateCertificate(certPath: str, keyPath: str) -> ssl.PrivateCertificate:
    cert = _read(certPath, "certificate")
    key = _read(keyPath, "private key")
    try:
        return ssl.PrivateCertificate.loadPEM(key + b"\n" + cert)
    except Exception as e:
        raise TLSConfigError(
            f"certificate {certPath} with key {keyPath} cannot be loaded: {e}"
        ) from None


def parseEndpointString(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split a Twisted endpoint description into its type, positional and
    keyword arguments, honouring backslash escapes as Twisted does
    (C{ssl:8443:privateKey=C\\:/k.pem} names C{C:/k.pem}).
    """
    parts = []
    current = []
    escaped = False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    kind, args, kwargs = parts[0], [], {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            kwargs[key] = value
        else:
            args.append(part)
    return kind, args, kwargs


def serverEndpoint(reactor, description: str, clientCA: str | None = None):
    """
    The listening endpoint for C{description}.

    @param description: a Twisted server endpoint string (C{tcp:8080},
        C{ssl:8443:privateKey=key.pem:certKey=cert.pem}, ...).
    @param clientCA: a PEM CA certificate; when given, C{description} must be
        an C{ssl:} endpoint, and connections must present a client
        certificate that this CA signed (mutual TLS).
    @raise TLSConfigError: if C{clientCA} is given for a non-TLS port or a
        file cannot be loaded.
    """
    if clientCA is None:
        return serverFromString(reactor, description)
    kind, args, kwargs = parseEndpointString(description)
    if kind != "ssl" or len(args) != 1:
        raise TLSConfigError(
            "--client-ca needs a TLS port such as "
            "ssl:8443:privateKey=key.pem:certKey=cert.pem"
        )
    keyPath = kwargs.get("privateKey", "server.pem")
    certPath = kwargs.get("certKey", keyPath)
    mine = _privateCertificate(certPath, keyPath)
    chain = []
    if "extraCertChain" in kwargs:
        pem = _read(kwargs["extraCertChain"], "certificate chain")
        end = b"-----END CERTIFICATE-----"
        chain = [
            ssl.Certificate.loadPEM(block + end).original
            for block in pem.split(end)
            if block.strip()
        ]
    options = ssl.CertificateOptions(
        privateKey=mine.privateKey.original,
        certificate=mine.original,
        extraCertChain=chain or None,
        # A trustRoot makes OpenSSL verify the peer, and requireCertificate
        # (on by default) makes a missing client certificate fatal.
        trustRoot=_certificate(clientCA, "client CA"),
    )
    return SSL4ServerEndpoint(
        reactor,
        int(args[0]),
        options,
        backlog=int(kwargs.get("backlog", 50)),
        interface=kwargs.get("interface", ""),
    )


def clientCreator(
    hostname: str,
    caCert: str | None = None,
    clientCert: str | None = None,
    clientKey: str | None = None,
):
    """
    Client TLS options: verify the receiver's certificate for C{hostname}
    against C{caCert} (or the platform's trust store when C{None}), and
    present C{clientCert}/C{clientKey} when both are given.

    @return: an C{IOpenSSLClientConnectionCreator} for C{connectSSL} or
        C{wrapClientTLS}.
    @raise TLSConfigError: for unreadable files, or a certificate without
        its key (or the reverse).
    """
    if (clientCert is None) != (clientKey is None):
        raise TLSConfigError("--client-cert and --client-key go together")
    trustRoot = (
        _certificate(caCert, "CA certificate")
        if caCert is not None
        else ssl.platformTrust()
    )
    mine = None
    if clientCert is not None:
        mine = _privateCertificate(clientCert, clientKey)
    return ssl.optionsForClientTLS(
        hostname, trustRoot=trustRoot, clientCertificate=mine
    )


def peerCertificateSubject(transport) -> str | None:
    """
    The common name of the certificate the peer presented over C{transport},
    or C{None} for a plain TCP connection or no certificate.
    """
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    if getPeerCertificate is None:
        return None
    try:
        x509 = getPeerCertificate()
    except Exception:
        return None
    if x509 is None:
        return None
    return ssl.Certificate(x509).getSubject().commonName.decode("utf-8", "replace")
