"""Knative-like data plane: every hop and every ``ctx.call`` is one HTTP/1.1 request.

Each endpoint serves HTTP on a loopback port of its own (uvloop + httptools); a sender keeps
one keep-alive connection per destination and POSTs each descriptor with the payload and the
request's metadata as the body, so the bytes really travel every hop: copied out of the
sender's slot, framed, sent over TCP, parsed, and written into the receiver's slot, as between
Knative functions (minus the sidecars). Requests on a connection are pipelined; each is
answered ``204`` once its descriptor is handed to the receiver. Descriptors without payload
(READY, DOWN, REFUSED) travel as bare 32-byte bodies.

The pool is where payloads are read and written (``Transport.carry``); without one (the
contract suite) only the descriptors travel.

With ``sidecar`` (``spright run --transport http --sidecar``: "knative-sidecar" in the
comparison) every function's public port belongs to a queue-proxy-like process
(spright/transport/sidecar.py) that counts and limits what reaches the function, which
listens on a port of its own behind it; the gateway plays the ingress and has none.
With ``ingress`` as well (``--sidecar --ingress``: the "knative" configuration, as the paper
ran it) every hop goes first through one nginx for the node (spright/transport/ingress.py),
which routes it by its Host header to the destination's queue-proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from spright.data.descriptor import OFFSETS, SIZE
from spright.data.table import RouteTable
from spright.host.pool import Payloads
from spright.transport import ingress as nginx
from spright.transport.base import Endpoint, Receiver, Transport
from spright.transport.wire import load, loopback_ports, store

if TYPE_CHECKING:
    from spright.data.config import Config

PATH = b"/spright/descriptor"
_REQUEST_ID = OFFSETS["request_id"]
ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


class HttpTransport(Transport):
    name = "http"
    attach_unprivileged = True  # its attach() starts threads (the resolver's): after seal() and the drop
    joinable = False  # its endpoints' state is not handed over to `spright worker` (yet)
    summary = ("Knative-like: every hop an HTTP/1.1 request over loopback TCP carrying the payload"
               " (--sidecar: a queue-proxy in front of each function; --ingress: nginx before every hop)")

    def __init__(self, runtime_dir: Path, table: RouteTable, *, sidecar: bool = False,
                 sidecar_concurrency: int = 0, ingress: bool = False, ingress_connections: int = 1) -> None:
        super().__init__(runtime_dir, table)
        self.sidecar = sidecar
        self.sidecar_concurrency = sidecar_concurrency
        self.ingress = ingress
        self.ports: dict[int, int] = {}  # each endpoint's public port: its sidecar's, if any
        self.own_ports: dict[int, int] = {}  # where each endpoint's server listens
        self.ingress_port: int | None = None  # with an ingress, where every sender connects
        # connections a sender opens per destination (the ingress's option): nginx, as Envoy, serves
        # one connection's requests one at a time, so one connection keeps a sender's hops to a
        # destination in order (the contract) but makes each wait for the one before; with more,
        # a request's hops keep to the connection its id picks and stay in order, other requests'
        # pass them, as on Knative, whose callers open a connection per request in flight
        self.lanes = ingress_connections if ingress else 1
        # the Host header a hop to each endpoint carries: the ingress routes by it
        self.hosts: dict[int, bytes] = {e: nginx.host_of(e).encode() if ingress else b"spright" for e in self.endpoints}
        self._sidecars: list[subprocess.Popen[bytes]] = []
        self._ingress: nginx.Ingress | None = None

    @classmethod
    def from_config(cls, runtime_dir: Path, table: RouteTable, config: Config) -> Transport:
        return cls(runtime_dir, table, sidecar=config.sidecar, sidecar_concurrency=config.sidecar_concurrency,
                   ingress=config.ingress, ingress_connections=config.ingress_connections)

    @classmethod
    def option_checks(cls) -> list[tuple[str, str | None, str]]:
        return [("http --sidecar --ingress", nginx.unavailable_reason(),
                 "the paper's Knative: every hop through nginx (the ingress), then the queue-proxy")]

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_sidecars": [], "_ingress": None}  # the supervisor's to stop

    def start(self) -> None:
        """A loopback port per endpoint and, with sidecars, one more per function, and one for
        the ingress, chosen by the kernel; then the sidecars and the ingress, each listening
        before this returns."""
        if self.ingress and (missing := nginx.unavailable_reason()):
            raise RuntimeError(missing)
        functions = [e for e in self.endpoints if e] if self.sidecar else []
        ports = loopback_ports(len(self.endpoints) + len(functions) + self.ingress)
        self.ports = dict(zip(self.endpoints, ports, strict=False))
        own = ports[len(self.endpoints) : len(self.endpoints) + len(functions)]
        self.own_ports = {**self.ports, **dict(zip(functions, own, strict=True))}
        if self.ingress:
            self.ingress_port = ports[-1]
            self._ingress = nginx.Ingress(self.runtime_dir / "ingress", ports[-1], dict(self.ports))
        for endpoint in functions:
            self._sidecars.append(subprocess.Popen([
                sys.executable, "-m", "spright.transport.sidecar", "--port", str(self.ports[endpoint]),
                "--upstream", str(self.own_ports[endpoint]), "--counters", str(self._counters_path(endpoint)),
                "--concurrency", str(self.sidecar_concurrency), "--function", self.table.name_of(endpoint)]))
        try:
            for endpoint in functions:
                self._wait_listening(self.ports[endpoint])
            if self._ingress is not None:
                self._ingress.start()
        except BaseException:
            self.stop()
            raise

    def _counters_path(self, endpoint: int) -> Path:
        return self.runtime_dir / f"sidecar-{endpoint}.counters"

    def _wait_listening(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            if any(p.poll() is not None for p in self._sidecars):
                raise RuntimeError("a sidecar exited at startup (its error is above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"a sidecar did not listen on port {port} within {timeout:.0f}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stops the ingress, then the sidecars (SIGTERM, then SIGKILL after 5 s); each removes
        its files."""
        ingress, self._ingress = self._ingress, None
        if ingress is not None:
            ingress.stop()
        sidecars, self._sidecars = self._sidecars, []
        for process in sidecars:
            process.terminate()
        for process in sidecars:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for endpoint in self.ports if self.sidecar else ():
            self._counters_path(endpoint).unlink(missing_ok=True)

    def node_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"ports": {str(endpoint): port for endpoint, port in self.ports.items()}}
        if self.sidecar:
            info["sidecars"] = {str(e): str(self._counters_path(e)) for e in self.endpoints if e}
            info["sidecar_concurrency"] = self.sidecar_concurrency
        if self.ingress_port is not None:
            info["ingress"] = {"port": self.ingress_port, "host": nginx.STATUS_HOST, "connections": self.lanes}
        return info

    @classmethod
    def live_counters(cls, node_info: dict[str, Any]) -> dict[int, dict[str, int]] | None:
        """The sidecars' counters (requests, in flight, queued, failed), when there are sidecars."""
        if "sidecars" not in node_info:
            return None
        from spright.transport.sidecar import read_counters  # not at import: it runs as __main__ in a sidecar

        return {int(e): read_counters(Path(path)) for e, path in node_info["sidecars"].items()}

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        if endpoint_id not in self.own_ports:
            raise ValueError(f"endpoint id {endpoint_id} is not one of this node's: {sorted(self.own_ports)}")
        loop = asyncio.get_running_loop()
        accepted: set[asyncio.BaseTransport] = set()
        server = await loop.create_server(lambda: _Receiving(on_receive, self.payloads, accepted), "127.0.0.1",
                                          self.own_ports[endpoint_id], reuse_address=True)
        return _HttpEndpoint(self, endpoint_id, server, accepted)


class _Receiving(asyncio.Protocol):
    """An endpoint's server side: each request's body becomes a descriptor (and a payload)."""

    def __init__(self, on_receive: Receiver, pool: Payloads | None, connections: set[asyncio.BaseTransport]) -> None:
        import httptools  # here, not at import: `spright stats` lists this data plane without loading it

        self._parse_error = httptools.HttpParserError
        self._on_receive = on_receive
        self._pool = pool
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(cast(asyncio.BaseTransport, self._transport))
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._parse_error:
            if self._transport is not None:
                self._transport.close()

    def on_body(self, chunk: bytes) -> None:
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body = []
        record = body[:SIZE]
        if len(body) > SIZE and self._pool is not None:
            store(self._pool, record, body[SIZE:])
        if self._transport is not None:
            self._transport.write(ANSWER)
        self._on_receive(record)


class _Sending(asyncio.Protocol):
    """A sender's keep-alive connection to one destination; the 204s are read and dropped."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class _HttpEndpoint(Endpoint):
    def __init__(self, owner: HttpTransport, endpoint_id: int, server: asyncio.AbstractServer,
                 accepted: set[asyncio.BaseTransport]) -> None:
        self._owner = owner
        self._id = endpoint_id
        self._server = server
        self._accepted = accepted
        self._loop = asyncio.get_running_loop()
        self._links: dict[int, _Sending] = {}
        self._connecting: dict[int, list[bytes]] = {}  # connection (_post's key) -> requests waiting for it

    def send(self, data: bytes) -> None:
        pool = self._owner.payloads
        for dest, batch in self._owner.domains.split(self._id, data).items():
            host = self._owner.hosts.get(dest, b"spright")
            lanes = self._owner.lanes
            requests: dict[int, list[bytes]] = {}
            for start in range(0, len(batch), SIZE):
                record = batch[start : start + SIZE]
                carried = load(pool, record) if pool is not None else b""
                # one lane (connection) per destination, or a request's own among `lanes`
                lane = int.from_bytes(record[_REQUEST_ID : _REQUEST_ID + 4], "little") % lanes if lanes > 1 else 0
                requests.setdefault(lane, []).append(
                    b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n\r\n%s%s"
                    % (PATH, host, SIZE + len(carried), record, carried))
            for lane, posts in requests.items():
                self._post(dest, lane, b"".join(posts))

    def _post(self, dest: int, lane: int, data: bytes) -> None:
        key = dest | lane << 32  # a connection per destination and lane (lane 0: the destination's id)
        if key in self._connecting:
            self._connecting[key].append(data)
            return
        link = self._links.get(key)
        if link is not None and link.transport is not None and not link.transport.is_closing():
            link.transport.write(data)
            return
        port = self._owner.ports.get(dest)
        if port is None:
            return  # no such endpoint: lost
        port = self._owner.ingress_port or port
        self._connecting[key] = [data]
        self._loop.create_task(self._connect(key, port))

    async def _connect(self, key: int, port: int) -> None:
        waiting = self._connecting[key]
        try:
            _, link = await self._loop.create_connection(_Sending, "127.0.0.1", port)
        except OSError:
            del self._connecting[key]  # nobody listens there: what waited is lost
            return
        del self._connecting[key]
        self._links[key] = link
        if link.transport is not None:
            link.transport.write(b"".join(waiting))

    def close(self) -> None:
        self._server.close()
        for connection in list(self._accepted):
            connection.close()
        for link in self._links.values():
            if link.transport is not None:
                link.transport.close()
        self._links.clear()
