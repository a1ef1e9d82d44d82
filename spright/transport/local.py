"""In-process transport: every endpoint lives in one event loop (TestClient's broker).

Delivery is deferred with ``call_soon`` so that, as on a real data plane, a send never
runs the receiver re-entrantly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from spright.routing import RouteTable
from spright.transport.base import Endpoint, Receiver, Transport, by_destination


class LocalTransport(Transport):
    name = "local"

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        super().__init__(runtime_dir, table)
        self.receivers: dict[int, Receiver] = {}

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        self.receivers[endpoint_id] = on_receive
        return _LocalEndpoint(self, endpoint_id)


class _LocalEndpoint(Endpoint):
    def __init__(self, transport: LocalTransport, endpoint_id: int) -> None:
        self._transport = transport
        self._id = endpoint_id
        self._loop = asyncio.get_running_loop()

    def send(self, data: bytes) -> None:
        for dest, batch in by_destination(data).items():
            receiver = self._transport.receivers.get(dest)
            if receiver is not None:  # like the kernel: no socket, the descriptor is dropped
                self._loop.call_soon(receiver, batch)

    def close(self) -> None:
        self._transport.receivers.pop(self._id, None)
