"""A running node's control socket: ``control.sock`` in its runtime directory (mode 0600, so
root or the node's user only), one JSON object per line each way.

Requests: ``{"scale": NAME, "instances": N}`` runs N instances of function NAME (answer:
``{"instances": N}``, once the new ones serve; leaving ones drain in the background);
``{"join": PROCESS, "instance": I, "pid": P}``: a worker started on its own (``spright worker``,
spright.node.join) joined, and the connection stays open for as long as it lives; anything else, or
a failure, is answered ``{"error": "..."}``. ``spright scale`` is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

SOCKET_NAME = "control.sock"
_UCRED = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve(runtime_dir: Path, handle: Handler, left: Callable[[dict[str, Any]], None]) -> asyncio.AbstractServer:
    """``left``: told of an answered ``join`` request once its connection ends."""
    path = runtime_dir / SOCKET_NAME
    path.unlink(missing_ok=True)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        joined = None
        # a peer of another uid is a worker (a pod's, unprivileged: join.hand_over): it may join, no more
        peer = writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        workers_only = _UCRED.unpack(peer)[1] != os.geteuid()
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                try:
                    request = orjson.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    if workers_only and "join" not in request:
                        raise ValueError("only the node's own user may scale, reload or roll out; a worker may join")
                    answer = await handle(request)
                    if "join" in request:
                        joined = request
                except (ValueError, LookupError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                    answer = {"error": str(exc)}
                writer.write(orjson.dumps(answer) + b"\n")
                await writer.drain()
        writer.close()
        if joined is not None:
            left(joined)

    server = await asyncio.start_unix_server(connection, str(path))
    path.chmod(0o600)
    return server


def request(runtime_dir: Path, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """One request to the node whose runtime directory this is (blocking: the CLI, tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(runtime_dir / SOCKET_NAME))
        sock.sendall(orjson.dumps(message) + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the node closed its control socket without an answer")
            answer += chunk
    result: dict[str, Any] = orjson.loads(answer)
    return result
