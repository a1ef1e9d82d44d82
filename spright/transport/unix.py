"""AF_UNIX stream fallback: same semantics as sk_msg, no root needed.

Each endpoint listens on ``<runtime_dir>/ep-<id>.sock``. A sender splits a batch by
destination and writes each part to a lazily opened stream connection to that endpoint
(stream sockets, not datagrams: ``net.unix.max_dgram_qlen`` is 10 and would stall).
A restarted worker re-creates its listener; a sender notices the broken connection on
its next write and reconnects. Workers that run as an unprivileged user (spright run --user)
connect as its group: the socket files are 0660 to it, the runtime directory 0710, reached
through a handle each worker opens before it drops its privileges (``Transport.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from spright.transport.base import Endpoint, Receiver, RecordProtocol, Transport


def socket_path(runtime_dir: Path, endpoint_id: int) -> Path:
    return runtime_dir / f"ep-{endpoint_id}.sock"


class UnixTransport(Transport):
    name = "unix"
    summary = "AF_UNIX streams: the same semantics, no root needed"

    def start(self) -> None:
        """Nothing to start: each endpoint listens on its own socket file (the runtime directory
        is searchable by the workers' group: spright.host.nodefile.make_runtime_dir)."""

    def stop(self) -> None:
        for endpoint_id in self.endpoints:
            socket_path(self.runtime_dir, endpoint_id).unlink(missing_ok=True)

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        path = socket_path(self.runtime_dir, endpoint_id)
        path.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        accepted: set[asyncio.BaseTransport] = set()
        server = await loop.create_unix_server(lambda: RecordProtocol(on_receive, accepted), str(path))
        self.grant(path)
        return _UnixEndpoint(self, endpoint_id, server, path, accepted)


class _Link:
    """Non-blocking write side of one connection, buffering only when the peer is slow."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._pending = bytearray()
        self.broken = False

    def write(self, data: bytes) -> bool:
        """False when the connection is broken and nothing was written."""
        if self.broken:
            return False
        if self._pending:
            self._pending += data
            return True
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return False
        if sent < len(data):
            self._pending += data[sent:]
            self._loop.add_writer(self._sock.fileno(), self._flush)
        return True

    def _flush(self) -> None:
        try:
            sent = self._sock.send(self._pending)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self._pending[:sent]
        if not self._pending:
            self._loop.remove_writer(self._sock.fileno())

    def close(self) -> None:
        if not self.broken:
            self.broken = True
            if self._pending:
                self._loop.remove_writer(self._sock.fileno())
            self._sock.close()


class _UnixEndpoint(Endpoint):
    def __init__(self, owner: UnixTransport, endpoint_id: int, server: asyncio.AbstractServer, path: Path,
                 accepted: set[asyncio.BaseTransport]) -> None:
        self._owner = owner
        self._domains = owner.domains
        self._id = endpoint_id
        self._server = server
        self._path = path
        self._accepted = accepted  # senders' connections: closed with the endpoint
        self._loop = asyncio.get_running_loop()
        self._links: dict[int, _Link] = {}

    def send(self, data: bytes) -> None:
        for dest, batch in self._domains.split(self._id, data).items():
            self._send_to(dest, batch)

    def _send_to(self, dest: int, data: bytes) -> None:
        link = self._links.get(dest)
        if link is not None and link.write(data):
            return
        link = self._connect(dest)  # first use, or the peer restarted since the last write
        if link is not None:
            link.write(data)

    def _connect(self, dest: int) -> _Link | None:
        """Connect synchronously (AF_UNIX connect is immediate) so ordering is kept."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._owner.path(socket_path(Path(), dest).name))
        except OSError:
            sock.close()
            return None  # endpoint is down: the descriptor is dropped, as the kernel would
        sock.setblocking(False)
        link = self._links[dest] = _Link(self._loop, sock)
        return link

    def close(self) -> None:
        """Nothing reaches the receiver after this: senders notice and reconnect to whoever
        attaches next under this id."""
        self._server.close()
        for connection in list(self._accepted):
            connection.close()
        for link in self._links.values():
            link.close()
        self._links.clear()
        # PermissionError: a worker that dropped its privileges; the supervisor removes it at stop,
        # and a restarted worker replaces it (a sender meanwhile meets no listener, as if none)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            self._path.unlink()
