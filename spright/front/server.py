"""The HTTP server of a gateway process: listening (plain or TLS, one port shared by the node's
gateway processes) and draining at shutdown; each connection is an HttpProtocol."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from spright.front.gateway import Gateway
from spright.front.http import HttpProtocol


async def serve(gateway: Gateway, host: str, port: int, reuse_port: bool = False,
                tls: ssl.SSLContext | None = None) -> tuple[asyncio.AbstractServer, set[HttpProtocol]]:
    """Listen for HTTP; returns the server and its live connections (for draining).
    ``reuse_port``: several gateway processes listen on the port, the kernel spreading
    new connections over them (SO_REUSEPORT). ``tls``: HTTPS only, on this context
    (spright.worker.peertls.server_context: mutual TLS between nodes)."""
    connections: set[HttpProtocol] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(gateway, connections), host, port, reuse_address=True, reuse_port=reuse_port or None,
        backlog=4096, ssl=tls,
    )
    return server, connections


async def drain(server: asyncio.AbstractServer, connections: set[HttpProtocol], gateway: Gateway,
                timeout: float) -> None:
    """Stop accepting, let in-flight requests finish (up to ``timeout``: then they are answered
    503), close idle keep-alives."""
    server.close()
    deadline = asyncio.get_running_loop().time() + timeout
    while connections and asyncio.get_running_loop().time() < deadline:
        for connection in list(connections):
            if connection.is_idle():
                connection.close()
        await asyncio.sleep(0.05)
    gateway.shed()  # written before the close below: a transport flushes what it holds first
    for connection in list(connections):
        connection.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 1)
