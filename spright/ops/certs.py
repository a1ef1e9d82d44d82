"""``spright certs``: a development CA and a certificate per node, for mutual TLS between nodes
(spright.worker.peertls; docs/deploy.md, "TLS between nodes").

    spright certs certs/ --nodes shop --nodes bank --san 10.0.0.2

writes ``ca.crt`` and ``ca.key`` (reused when DIR has them: new nodes join the same CA), and per
node ``NAME.crt`` and ``NAME.key``: an EC P-256 key and a certificate the CA signed, good for
both ends of a hop (server and client auth), naming the node and every ``--san``. Keys are
written 0600. A development CA: for production, issue the same files from your own PKI
(cert-manager, Vault) and keep its key off the nodes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from spright.ops.console import fail

if TYPE_CHECKING:  # imported where used: every other `spright` command starts without cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_DAYS = 3650
NODE_DAYS = 397  # what browsers still accept for a leaf; a development node's is no different

# `spright run` and `spright gateway` options (spright.data.config's tls_* and insecure_peers)
TLS_CERT = typer.Option(None, envvar="SPRIGHT_TLS_CERT", metavar="PEM",
                        help="This node's certificate: hops to and from other nodes over mutual TLS (spright certs).")
TLS_KEY = typer.Option(None, envvar="SPRIGHT_TLS_KEY", metavar="PEM", help="This node's private key (--tls-cert's).")
TLS_CA = typer.Option(None, envvar="SPRIGHT_TLS_CA", metavar="PEM", help="The CA every node's certificate is from.")
INSECURE_PEERS = typer.Option(None, "--insecure-peers", help="Allow plaintext http:// peers (and say so: no warning).")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(name: str = "spright development CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def san(value: str) -> x509.GeneralName:
    """An IP address SAN for an address, else a DNS name."""
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def make_node(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str, sans: list[str],
              not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A node's key and certificate, signed by the CA: server and client auth, SANs ``name`` and ``sans``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys([name, *sans]))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or _now() - datetime.timedelta(minutes=5))
            .not_valid_after(not_after or _now() + datetime.timedelta(days=NODE_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([san(value) for value in names]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """The key in PEM, readable by its owner only (0600, from the moment the file exists)."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)  # a file that was there keeps its mode through O_CREAT
        file.write(pem)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_or_make_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    """DIR's CA (ca.key, ca.crt) when there is one, else a new one written there; True: new."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC key (spright certs writes P-256 ones)")
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes()), False
    key, cert = make_ca()
    write_key(key_path, key)
    write_cert(cert_path, cert)
    return key, cert, True


def certs(
    directory: Path = typer.Argument(..., help="Where to write ca.crt, ca.key and NAME.crt, NAME.key per node."),  # noqa: B008
    nodes: list[str] = typer.Option(  # noqa: B008
        [], "--nodes", metavar="NAME", help="A node to make a certificate for (repeatable); its SAN is NAME."),
    sans: list[str] = typer.Option(  # noqa: B008
        [], "--san", metavar="IP|DNS", help="Another name every node's certificate is valid for (repeatable)."),
) -> None:
    """A development CA (reused when DIR has one) and, per --nodes NAME, a key and certificate it
    signed, for mutual TLS between nodes (`spright run --tls-cert DIR/NAME.crt --tls-key
    DIR/NAME.key --tls-ca DIR/ca.crt`). Keys are written 0600."""
    for name in nodes:
        if not name or "/" in name or name in ("ca", ".", ".."):
            raise fail(f"--nodes NAME names a file in DIR: {name!r} will not do")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert, new = load_or_make_ca(directory)
        typer.echo(f"{'wrote' if new else 'kept'} {directory / 'ca.crt'} and {directory / 'ca.key'}")
        for name in nodes:
            key, cert = make_node(ca_key, ca_cert, name, sans)
            write_key(directory / f"{name}.key", key)
            write_cert(directory / f"{name}.crt", cert)
            typer.echo(f"wrote {directory / name}.crt and {directory / name}.key")
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
