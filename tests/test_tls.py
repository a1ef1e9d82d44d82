"""TLS between nodes (docs/deploy.md, "TLS between nodes"): certificates from `spright certs`;
the bank's node in a network namespace of its own (tests/test_remote.py's), serving its exposed
function over mutual TLS with the peer token on top; the shop's node here, reaching it at an
https:// URL. A chain crosses; a client without a certificate, with one from another CA, or
with an expired one is refused in the handshake; a shop node whose certificate is another CA's
gets a 502; http:// peers are refused at start when the node has TLS files."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from spright.ops.cli import cli
from spright.testing import run_node
from tests.test_remote import BANK, network_namespace, start_bank

TOKEN = {"SPRIGHT_PEER_TOKEN": "tls-and-token"}
BANK_URL = f"https://{BANK}:8080"


def certs(directory: Path, *args: str) -> None:
    done = CliRunner().invoke(cli, ["certs", str(directory), *args])
    assert done.exit_code == 0, done.output


def tls_args(directory: Path, node: str, ca: Path | None = None) -> tuple[str, ...]:
    return ("--tls-cert", str(directory / f"{node}.crt"), "--tls-key", str(directory / f"{node}.key"),
            "--tls-ca", str(ca or directory / "ca.crt"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`spright certs` for the bank (its IP in its SANs) and the shop; another CA's shop; an
    expired certificate from the right CA, made here."""
    root = tmp_path_factory.mktemp("pki")
    certs(root / "good", "--nodes", "bank", "--nodes", "shop", "--san", BANK)
    certs(root / "other", "--nodes", "shop")
    ca_key = serialization.load_pem_private_key((root / "good" / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((root / "good" / "ca.crt").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    for name, days in (("old", (-30, -1)), ("fresh", (-1, 30))):  # alike but for their validity
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now + datetime.timedelta(days=days[0]))
                .not_valid_after(now + datetime.timedelta(days=days[1]))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (root / "good" / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / "good" / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return root


@pytest.fixture(scope="module")
def bank(pki: Path, runtime_dir: Path) -> Iterator[None]:
    """The bank's node in its namespace: mutual TLS and the peer token."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    with network_namespace() as namespace:
        node = start_bank(namespace, "unix", *tls_args(pki / "good", "bank"), env=TOKEN)
        try:
            yield
        finally:
            node.terminate()
            node.wait(30)


def call_bank(pki: Path, node: str | None, token: str | None = TOKEN["SPRIGHT_PEER_TOKEN"]) -> int | None:
    """POST to the bank's exposed function as a client presenting ``node``'s certificate (from
    pki/good; None: none) and the token; the answer's status, None when the bank refused the
    connection (it closes it in the handshake: uvloop sends no alert, so no reason comes back)."""
    context = ssl.create_default_context(cafile=pki / "good" / "ca.crt")
    if node is not None:
        context.load_cert_chain(pki / "good" / f"{node}.crt", pki / "good" / f"{node}.key")
    body = b'{"amount": 7}'
    request = (f"POST /.spright/call/payment HTTP/1.1\r\nhost: {BANK}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\nconnection: close\r\n"
               + (f"authorization: Bearer {token}\r\n" if token else "") + "\r\n").encode() + body
    with socket.create_connection((BANK, 8080), timeout=30) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=BANK) as tls:
                tls.sendall(request)
                answer = tls.recv(65536)  # TLS 1.3: the client's certificate is judged after its handshake
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return None
    return int(answer.split()[1]) if answer else None


def post(port: int, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b'{"amount": 5}', method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, orjson.loads(refused.read())


pytestmark = [pytest.mark.node]
needs_netns = pytest.mark.needs("netns")


@needs_netns
def test_a_chain_crosses_to_another_node_over_mutual_tls(pki: Path, bank: None) -> None:
    env = {**TOKEN, "BANK_URL": BANK_URL}
    with run_node("tests.apps.remote:shop", args=tls_args(pki / "good", "shop"), env=env) as (port, _):
        assert post(port, "/checkout") == (200, {"amount": 5, "prepared": True, "charged": 5, "session": None,
                                                 "finished": True})
        assert post(port, "/ask")[1]["asked"]["charged"] == 5


@needs_netns
def test_the_peer_token_is_still_checked_over_tls(pki: Path, bank: None) -> None:
    assert call_bank(pki, "shop") == 200
    assert call_bank(pki, "shop", token=None) == 401
    assert call_bank(pki, "shop", token="wrong") == 401


@needs_netns
def test_a_client_without_a_certificate_is_refused(pki: Path, bank: None) -> None:
    assert call_bank(pki, None) is None
    assert call_bank(pki, "shop") == 200
    with socket.create_connection((BANK, 8080), timeout=30) as plain:  # plaintext: no HTTP answer
        plain.sendall(b"POST /.spright/call/payment HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        assert not plain.recv(65536).startswith(b"HTTP/")


@needs_netns
def test_a_client_with_an_expired_certificate_is_refused(pki: Path, bank: None) -> None:
    assert call_bank(pki, "old") is None
    assert call_bank(pki, "fresh") == 200  # the same but in its validity


@needs_netns
def test_a_node_whose_certificate_is_another_cas_is_refused(pki: Path, bank: None) -> None:
    """The shop trusts the bank's CA, but its own certificate is from another: the bank refuses
    it in the handshake, and the hop is a 502 (unreachable), never reaching the function."""
    env = {**TOKEN, "BANK_URL": BANK_URL}
    args = tls_args(pki / "other", "shop", ca=pki / "good" / "ca.crt")
    with run_node("tests.apps.remote:shop", args=args, env=env) as (port, _):
        status, body = post(port, "/checkout")
        assert status == 502 and "unreachable" in body["error"], body


def test_with_tls_files_a_plaintext_peer_is_refused_unless_insecure_peers(pki: Path, runtime_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "spright", "run", "tests.apps.remote:shop", "--port", "0",
                           *tls_args(pki / "good", "shop")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BANK_URL": "http://127.0.0.1:9"})
    said = " ".join(done.stderr.split())  # as the console wrapped it
    assert done.returncode != 0 and "give its https:// URL, or pass --insecure-peers" in said, said
    with run_node("tests.apps.remote:shop", args=(*tls_args(pki / "good", "shop"), "--insecure-peers"),
                  env={"BANK_URL": "http://127.0.0.1:9"}) as (port, _):
        assert post(port, "/checkout")[0] == 502  # started; nobody at port 9


def test_spright_certs_writes_keys_0600_and_certificates_the_ca_signed(tmp_path: Path) -> None:
    certs(tmp_path, "--nodes", "a", "--nodes", "b", "--san", "10.0.0.2", "--san", "a.example")
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for name in ("ca", "a", "b"):
        assert stat.S_IMODE((tmp_path / f"{name}.key").stat().st_mode) == 0o600, name
    for name in ("a", "b"):
        cert = x509.load_pem_x509_certificate((tmp_path / f"{name}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [name, "a.example"]
        assert [str(address) for address in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]
        # what a node loads: the key is the certificate's; OpenSSL takes it for either end of a hop
        ssl.create_default_context(cafile=tmp_path / "ca.crt").load_cert_chain(tmp_path / f"{name}.crt",
                                                                               tmp_path / f"{name}.key")
        for purpose in ("sslserver", "sslclient"):
            verified = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile",
                                       tmp_path / "ca.crt", tmp_path / f"{name}.crt"], capture_output=True, text=True)
            assert verified.returncode == 0, verified.stdout + verified.stderr
    assert x509.load_pem_x509_certificate((tmp_path / "a.crt").read_bytes()).issuer == ca.subject
    (tmp_path / "a.key").chmod(0o644)
    certs(tmp_path, "--nodes", "a", "--nodes", "c")  # the CA kept, a's key rewritten 0600
    assert x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()) == ca
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    x509.load_pem_x509_certificate((tmp_path / "c.crt").read_bytes()).verify_directly_issued_by(ca)
