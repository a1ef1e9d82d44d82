"""In-process transport: every endpoint lives in one event loop (TestClient's broker).

Delivery is deferred with ``call_soon`` so that, as on a real data plane, a send never
runs the receiver re-entrantly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from spright.data.table import RouteTable
from spright.transport.base import Endpoint, Receiver, Transport


class LocalTransport(Transport):
    name = "local"

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        super().__init__(runtime_dir, table)
        self.receivers: dict[int, Receiver] = {}

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        self.receivers[endpoint_id] = on_receive
        return _LocalEndpoint(self, endpoint_id, on_receive)


class _LocalEndpoint(Endpoint):
    def __init__(self, transport: LocalTransport, endpoint_id: int, receiver: Receiver) -> None:
        self._transport = transport
        self._id = endpoint_id
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()

    def send(self, data: bytes) -> None:
        for dest, batch in self._transport.domains.split(self._id, data).items():
            self._loop.call_soon(self._deliver, dest, batch)

    def _deliver(self, dest: int, batch: bytes) -> None:
        """To whoever is attached as ``dest`` at delivery time; like the kernel with no
        socket, nobody attached means the batch is lost."""
        receiver = self._transport.receivers.get(dest)
        if receiver is not None:
            receiver(batch)

    def close(self) -> None:
        if self._transport.receivers.get(self._id) is self._receiver:  # not a successor's
            del self._transport.receivers[self._id]
