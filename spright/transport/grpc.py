"""gRPC data plane: every hop and every ``ctx.call`` is a unary gRPC call, as upstream Online
Boutique's services call each other.

Each endpoint runs a grpcio (asyncio) server on a loopback port with one generic method,
``/spright.DataPlane/Hop``, whose request is bytes: frames of a 4-byte length, the 32-byte
descriptor and what the hop carries (metadata and payload, spright/transport/wire.py). A
sender keeps one channel per destination. Unary calls on one channel may be served out of
order, and the contract keeps each sender's order per destination: so a sender has at most
one call in flight per destination, and what queues meanwhile leaves together in the next
call. A call that fails (nobody serves that endpoint) loses its descriptors, and the channel
is dropped so that a restarted endpoint is reached afresh.

grpc.aio tears down asynchronously: ``close()`` starts it and ``await endpoint.closed()``
finishes it, before the event loop ends.
"""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spright.data.descriptor import SIZE
from spright.data.table import RouteTable
from spright.host.pool import Payloads
from spright.transport.base import Endpoint, Receiver, Transport
from spright.transport.wire import load, loopback_ports, store

if TYPE_CHECKING:
    import grpc

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc loads: no INFO line per peer's goaway
METHOD = "/spright.DataPlane/Hop"
# a call carries a batch of payloads: no message size limit (grpc's default is 4 MB)
UNLIMITED = (("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1))
_FRAME = struct.Struct("<I")


class GrpcTransport(Transport):
    name = "grpc"
    attach_unprivileged = True  # grpc's threads start in attach(): after the worker's seal() and drop
    joinable = False  # its endpoints' state is not handed over to `spright worker` (yet)
    summary = "gRPC services: every hop a unary grpcio (asyncio) call over loopback HTTP/2 carrying the payload"

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        super().__init__(runtime_dir, table)
        self.ports: dict[int, int] = {}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import grpc  # noqa: F401
        except ImportError:
            return "grpcio is not installed (pip install 'spright[grpc]')"
        return None

    def start(self) -> None:
        self.ports = dict(zip(self.endpoints, loopback_ports(len(self.endpoints)), strict=True))

    def node_info(self) -> dict[str, Any]:
        return {"ports": {str(endpoint): port for endpoint, port in self.ports.items()}}

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        if endpoint_id not in self.ports:
            raise ValueError(f"endpoint id {endpoint_id} is not one of this node's: {sorted(self.ports)}")
        import grpc

        pool = self.payloads

        async def hop(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            records = []
            view, at = memoryview(request), 0
            while at < len(request):
                (length,) = _FRAME.unpack_from(request, at)
                record = bytes(view[at + 4 : at + 4 + SIZE])
                if length > SIZE and pool is not None:
                    store(pool, record, bytes(view[at + 4 + SIZE : at + 4 + length]))
                records.append(record)
                at += 4 + length
            on_receive(b"".join(records))
            return b""

        server = grpc.aio.server(options=UNLIMITED)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "spright.DataPlane", {"Hop": grpc.unary_unary_rpc_method_handler(hop)}),))
        if not server.add_insecure_port(f"127.0.0.1:{self.ports[endpoint_id]}"):
            raise OSError(f"grpc: cannot listen on 127.0.0.1:{self.ports[endpoint_id]}")
        await server.start()
        return _GrpcEndpoint(self, endpoint_id, server, pool)


class _GrpcEndpoint(Endpoint):
    def __init__(self, owner: GrpcTransport, endpoint_id: int, server: grpc.aio.Server, pool: Payloads | None) -> None:
        self._owner = owner
        self._id = endpoint_id
        self._server = server
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._queued: dict[int, list[bytes]] = {}  # destination -> frames waiting for the call in flight
        self._senders: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        if self._closing is not None:
            return
        for dest, batch in self._owner.domains.split(self._id, data).items():
            if dest not in self._owner.ports:
                continue  # no such endpoint: lost
            frames: list[bytes] = []
            for start in range(0, len(batch), SIZE):
                record = batch[start : start + SIZE]
                carried = load(self._pool, record) if self._pool is not None else b""
                frames += (_FRAME.pack(SIZE + len(carried)), record, carried)
            if dest in self._queued:
                self._queued[dest] += frames
            else:
                self._queued[dest] = frames
                sender = self._loop.create_task(self._send(dest))
                self._senders.add(sender)
                sender.add_done_callback(self._senders.discard)

    async def _send(self, dest: int) -> None:
        """One call in flight to ``dest`` at a time; what queued meanwhile goes in the next."""
        import grpc

        while frames := self._queued.get(dest):
            self._queued[dest] = []
            channel = self._channels.get(dest)
            if channel is None:
                channel = self._channels[dest] = grpc.aio.insecure_channel(f"127.0.0.1:{self._owner.ports[dest]}",
                                                                                 options=UNLIMITED)
            try:
                hop: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
                await hop(b"".join(frames))
            except grpc.aio.AioRpcError:  # nobody serves it now: lost; a restarted one gets a new channel
                if self._channels.get(dest) is channel:
                    del self._channels[dest]
                    await channel.close()
        self._queued.pop(dest, None)

    def close(self) -> None:
        if self._closing is None:
            self._closing = self._loop.create_task(self._shutdown())

    async def _shutdown(self) -> None:
        for sender in list(self._senders):
            sender.cancel()
        self._queued.clear()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        await self._server.stop(None)

    async def closed(self) -> None:
        if self._closing is not None:
            await self._closing
