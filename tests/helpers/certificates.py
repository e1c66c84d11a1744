"""
Certificates made at run time with C{cryptography}, for TLS tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = None

__all__ = ["makeCertificates", "sslPort"]


def _name(cn: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key, issuerName, issuerKey, ca: bool, hosts=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuerName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        names = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    return builder.sign(issuerKey, hashes.SHA256())


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _writePair(directory: str, stem: str, cert, key) -> tuple[str, str]:
    certPath = _write(directory, stem + ".crt", cert.public_bytes(serialization.Encoding.PEM))
    keyPath = _write(
        directory,
        stem + ".key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return certPath, keyPath


def makeCertificates(directory: str) -> dict[str, str]:
    """
    Write a CA, a server certificate for C{localhost}/C{127.0.0.1}, a client
    certificate (CN C{cam-1}) signed by that CA, and a second, untrusted CA
    with its own client certificate, into C{directory}.

    @return: paths keyed C{ca}, C{serverCert}, C{serverKey}, C{clientCert},
        C{clientKey}, C{rogueCa}, C{rogueCert}, C{rogueKey}.
    @raise ImportError: if C{cryptography} is not installed.
    """
    if x509 is None:
        raise ImportError("cryptography is not installed")
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for prefix, caName in [("", "imageproto test CA"), ("rogue", "rogue CA")]:
        caKey = ec.generate_private_key(ec.SECP256R1())
        caCert = _issue(caName, caKey, _name(caName), caKey, ca=True)
        caPath, _ = _writePair(directory, prefix + "ca", caCert, caKey)
        clientKey = ec.generate_private_key(ec.SECP256R1())
        client = _issue("cam-1", clientKey, caCert.subject, caKey, ca=False)
        clientPaths = _writePair(directory, prefix + "client", client, clientKey)
        if prefix:
            paths.update(rogueCa=caPath, rogueCert=clientPaths[0], rogueKey=clientPaths[1])
        else:
            paths.update(ca=caPath, clientCert=clientPaths[0], clientKey=clientPaths[1])
            serverKey = ec.generate_private_key(ec.SECP256R1())
            server = _issue(
                "localhost",
                serverKey,
                caCert.subject,
                caKey,
                ca=False,
                hosts=("localhost", "127.0.0.1"),
            )
            paths["serverCert"], paths["serverKey"] = _writePair(
                directory, "server", server, serverKey
            )
    return paths


def sslPort(paths: dict[str, str], port: int = 0) -> str:
    """
    The receiver's C{--port} string for the server certificate in C{paths}.
    """
    return (
        f"ssl:{port}:interface=127.0.0.1:privateKey={paths['serverKey']}"
        f":certKey={paths['serverCert']}"
    )
