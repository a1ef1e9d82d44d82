"""Mutual TLS between nodes: the contexts the two ends of a cross-node hop use.

A node's TLS settings (``Config.tls_cert``, ``tls_key``, ``tls_ca``, ``insecure_peers``; ``spright
run --tls-cert ...``) reach every process of the node through the environment (``export``): the
workers that host ``RemoteFunction``s load the app afresh and read them there, as a worker
container of a pod reads what its manifest sets. The server end (a node that exposes
functions) asks every client for a certificate the CA signed (``ssl.CERT_REQUIRED``); the
client end presents the node's own and checks the peer's against the CA and the URL's host.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit

from spright.data.config import Config

CERT_ENV, KEY_ENV, CA_ENV = "SPRIGHT_TLS_CERT", "SPRIGHT_TLS_KEY", "SPRIGHT_TLS_CA"
INSECURE_ENV = "SPRIGHT_INSECURE_PEERS"  # "1": plaintext http:// peers even with TLS files given


def export(config: Config) -> None:
    """Put ``config``'s TLS settings where the node's processes (forked or spawned) find them."""
    for name, value in ((CERT_ENV, config.tls_cert), (KEY_ENV, config.tls_key), (CA_ENV, config.tls_ca)):
        if value:
            os.environ[name] = os.path.abspath(value)  # a worker's working directory may differ
        else:
            os.environ.pop(name, None)
    os.environ[INSECURE_ENV] = "1" if config.insecure_peers else "0"
    client_context.cache_clear()


def configured() -> bool:
    """This node's TLS files are set (its https:// peers can be reached)."""
    return _files() is not None


def _files() -> tuple[str, str, str] | None:
    cert, key, ca = (os.environ.get(name) for name in (CERT_ENV, KEY_ENV, CA_ENV))
    return (cert, key, ca) if cert and key and ca else None


def server_context(config: Config) -> ssl.SSLContext:
    """The HTTPS server's context: the node's certificate, a client certificate signed by the
    CA required of every client. OSError / ssl.SSLError when a file is missing or wrong."""
    assert config.tls_cert and config.tls_key and config.tls_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.tls_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


@functools.cache
def client_context() -> ssl.SSLContext:
    """A worker's context for https:// peers: the node's certificate as client certificate, the
    peer's checked against the CA and the URL's host. OSError when no TLS files are set."""
    files = _files()
    if files is None:
        raise OSError(f"an https:// peer needs the node's TLS files (--tls-cert, --tls-key, --tls-ca; ${CERT_ENV}...)")
    cert, key, ca = files
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def peer_problems(urls: Iterable[tuple[str, str]], config: Config) -> list[str]:
    """Why the node must not start with these remote functions (name, URL) under ``config``:
    an http:// peer with TLS files given and no ``insecure_peers``, an https:// one without them."""
    problems = []
    for name, url in urls:
        scheme = urlsplit(url).scheme
        if scheme == "http" and config.tls and not config.insecure_peers:
            problems.append(f"remote function {name!r} is at {url}, plaintext, while this node has TLS files: "
                            "give its https:// URL, or pass --insecure-peers to allow plaintext peers")
        elif scheme == "https" and not config.tls:
            problems.append(f"remote function {name!r} is at {url}: an https:// peer needs this node's "
                            "--tls-cert, --tls-key and --tls-ca")
    return problems
