"""Functions on other nodes: the one hop of a chain (or ``ctx.call``) that leaves the machine.

``app.remote("payment", "http://10.0.0.2:8080")`` declares a function that another node serves;
that node says ``app.expose("payment")``, which routes ``POST /.spright/call/payment`` to it.
Chains and calls name the remote function as any other: its hop goes, zero-copy, to a worker
whose handler is a ``RemoteFunction``, which POSTs the payload to the other node's gateway over
a pooled HTTP/1.1 keep-alive connection and hands on what comes back (status and content type
kept). The rest of the chain stays in shared memory. The request's headers travel with it (the
hop-by-hop ones excepted), so cookies still reach the remote function.

An ``https://`` peer is reached over mutual TLS (spright.worker.peertls): this node's
certificate presented, the peer's checked against the nodes' CA and the URL's host.

With ``$SPRIGHT_PEER_TOKEN`` set on the nodes, a call to an exposed function must carry it
(``authorization: Bearer``); without, exposed functions are open to whoever reaches the port.

Failures keep the route's semantics: a node that cannot be reached or breaks the connection is
a 502 at once, one that does not answer within the route's timeout a 504 (the gateway's own
deadline answers the client by then), and the remote function's own error status and message
come back as they were (a ``CallError`` for a caller, the chain's answer otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson

from spright.data.config import Config
from spright.data.function import Function
from spright.data.headers import FRAMING
from spright.data.response import Response, error_response
from spright.data.table import RouteTable
from spright.worker import peertls
from spright.worker.context import CallError, Context, HTTPError

log = logging.getLogger("spright")
CALL_PATH = "/.spright/call/"  # + the function's name: where a node serves its exposed functions
PEER_TOKEN_ENV = "SPRIGHT_PEER_TOKEN"  # set on every node: calls between them must carry it
MAX_IDLE = 64  # keep-alive connections kept per peer node
_HOP_BY_HOP = FRAMING | {"host", "expect"}  # request headers not handed on to the other node
# the other node's trace of its part: this node's gateway answers with its own, whole
TRACE_HEADERS = frozenset({"traceparent", "tracestate", "server-timing"})


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of a peer node's base URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"a remote node is http://HOST[:PORT] or https://HOST[:PORT] (mutual TLS), not {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def remote_urls(functions: Mapping[str, Function]) -> list[tuple[str, str]]:
    """(name, peer URL) of the remote functions among ``functions``."""
    return [(name, f.handler.peer.url) for name, f in functions.items() if isinstance(f.handler, RemoteFunction)]


def exposes(table: RouteTable) -> bool:
    """The node serves functions to other nodes (``App.expose``: a route under ``CALL_PATH``)."""
    return any(route.path.startswith(CALL_PATH) for route in table.routes)


def server_tls(config: Config, table: RouteTable) -> ssl.SSLContext | None:
    """The HTTPS context of a node that exposes functions and has TLS files (every client of its
    port then needs a certificate the CA signed); None: it serves plain HTTP."""
    if not (config.tls and exposes(table)):
        return None
    try:
        return peertls.server_context(config)
    except OSError as exc:  # ssl.SSLError too: a file missing, unreadable, or not the key of the certificate
        raise ValueError(f"cannot load this node's TLS files (--tls-cert, --tls-key, --tls-ca): {exc}") from None


def node_tls(functions: Mapping[str, Function], table: RouteTable, config: Config) -> ssl.SSLContext | None:
    """A node's TLS at start (spright.node.supervisor): its hops to other nodes checked against its
    TLS settings (ValueError: why it must not start), the settings handed to its processes, a
    warning when hops are plaintext unasked; the HTTPS context it serves on, if any."""
    urls = remote_urls(functions)
    if problems := peertls.peer_problems(urls, config):
        raise ValueError("; ".join(problems))
    peertls.export(config)
    if (urls or exposes(table)) and not config.tls and not config.insecure_peers:
        log.warning("spright: hops between this node and others are plaintext HTTP: give --tls-cert, --tls-key "
                    "and --tls-ca for mutual TLS (spright certs), or --insecure-peers to say plaintext is meant")
    return server_tls(config, table)


def peer_refusal(path: str, headers: dict[str, str]) -> Response | None:
    """A 401 for a call to an exposed function (``CALL_PATH``) that lacks the nodes' shared
    token, when ``$SPRIGHT_PEER_TOKEN`` is set; None when the request may go on."""
    if not path.startswith(CALL_PATH) or not (token := os.environ.get(PEER_TOKEN_ENV)):
        return None
    if hmac.compare_digest(headers.get("authorization", "").encode(), f"Bearer {token}".encode()):
        return None
    response = error_response(401, f"calls to exposed functions need the nodes' token (${PEER_TOKEN_ENV})")
    response.raw_headers.append((b"www-authenticate", b"Bearer"))
    return response


class _Response:
    """httptools callbacks: one response."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []  # in order; Set-Cookie may repeat
        self.body = bytearray()
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class Peer:
    """Keep-alive HTTP/1.1 connections to one node, reused one request at a time each."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.host, self.port = parse_url(url)
        self.tls = url.startswith("https:")
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body); OSError when the node cannot be reached or breaks off."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items() if name not in _HOP_BY_HOP)
        request = (f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-length: {len(body)}\r\n"
                   f"{head}\r\n").encode("latin-1") + body
        while self._idle:  # a pooled connection the node closed meanwhile fails before any answer: next
            reader, writer = self._idle.pop()
            with contextlib.suppress(OSError):
                return await self._exchange(reader, writer, request)
        if self.tls:  # mutual TLS; a failed handshake is an OSError (ssl.SSLError) as any: a 502
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=peertls.client_context(),
                                                           server_hostname=self.host)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer, request)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            writer.write(request)
            response = _Response()
            parser = httptools.HttpResponseParser(response)
            while not response.complete:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("the node closed the connection before answering")
                parser.feed_data(data)
        except (OSError, httptools.HttpParserError) as exc:
            writer.close()
            raise OSError(str(exc) or type(exc).__name__) from None
        except BaseException:  # cancelled (the route's timeout): the connection is in an unknown state
            writer.close()
            raise
        if parser.should_keep_alive() and len(self._idle) < MAX_IDLE:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return parser.get_status_code(), response.headers, bytes(response.body)


class RemoteFunction:
    """The handler of a function another node serves (``App.remote``)."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.peer = Peer(url)
        self.__name__ = name

    async def __call__(self, ctx: Context) -> bytes:
        headers: dict[str, Any] = dict(ctx.headers)
        if os.environ.get(PEER_TOKEN_ENV):  # the other node's gateway checks it (peer_refusal)
            headers["authorization"] = f"Bearer {os.environ[PEER_TOKEN_ENV]}"
        try:
            async with asyncio.timeout(ctx.timeout):
                status, answer_headers, body = await self.peer.post(CALL_PATH + self.name, ctx.bytes(), headers)
        except TimeoutError:
            raise HTTPError(504, f"node {self.peer.url} did not answer for {self.name!r} in time") from None
        except OSError as exc:
            raise HTTPError(502, f"node {self.peer.url} unreachable for {self.name!r}: {exc}") from None
        if status >= 400:
            raise CallError(status, _detail(body), self.name)
        ctx.status = status
        for name, value in answer_headers:  # what the functions over there set, as if set here
            if name == "content-type":
                ctx.content_type = value
            elif name not in FRAMING and name not in TRACE_HEADERS:
                ctx.set_header(name, value)
        return body


def _detail(body: bytes) -> str:
    """The remote function's error message (``{"error": ...}``), else its body as text."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(orjson.loads(body)["error"])
    return body.decode(errors="replace")[:200]
