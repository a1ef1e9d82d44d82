"""CPU per request in the gateway and per descriptor in a worker, in one process, no syscalls.

What ``bench.run`` cannot separate: how much of a request is spright's own Python. The
gateway is fed 64 keep-alive "GET /" requests at a time through its real ``HttpProtocol``,
and a stand-in for the function answers every descriptor at once; a real ``Worker`` is fed
batches of 64 REQUEST descriptors and its sends are only counted. Best of 7 rounds. A
``ctx.call`` round trip is measured through TestClient (the in-memory data plane).
Usage: ``python -m bench.inprocess``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from spright import App, Config, Context
from spright.data import descriptor
from spright.data.descriptor import GATEWAY, REQUEST, RESPONSE, SIZE, unpack_many
from spright.front.gateway import Gateway
from spright.front.http import HttpProtocol
from spright.front.roles import Follower
from spright.host.pool import Pool
from spright.host.pools import NodePool
from spright.transport.base import Endpoint, Receiver, Transport
from spright.worker.runtime import Worker

REQUEST_BYTES = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CONNECTIONS = 64


async def _hello(ctx: Context) -> bytes:
    return b"hello"


async def _passthrough(ctx: Context) -> memoryview:
    return ctx.body


class _Collect(Endpoint):
    """Keeps what is sent, for the round to hand back (or just count)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


class _InMemory(Transport):
    name = "in-memory"

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        self.endpoint = _Collect()
        return self.endpoint


class _Socket:
    """The slice of asyncio.Transport that HttpProtocol uses; writes are dropped."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _best(round_: Callable[[], Awaitable[None]], per_round: int, rounds: int = 300) -> float:
    """µs per item over the best of 7 timed runs of ``rounds`` rounds, after as many warm-up rounds."""
    for _ in range(rounds):
        await round_()
    best = float("inf")
    for _ in range(7):
        gc.collect()
        start = time.perf_counter()
        for _ in range(rounds):
            await round_()
        best = min(best, (time.perf_counter() - start) / (rounds * per_round) * 1e6)
    return best


async def gateway_us(rounds: int = 300) -> float:
    app = App("inprocess-gateway")
    app.route("/", app.add_function(_hello, name="hello"), methods=["GET"])
    table = app.compile()
    pool = NodePool.create(Config().pool, (f.domain for f in table.functions))
    transport = _InMemory(Path("/nonexistent"), table)
    gateway = Gateway(table, pool, Config(), Follower(table, transport))
    try:
        await gateway.start(transport)
        await asyncio.sleep(0)  # its READY leaves
        transport.endpoint.sent.clear()
        connections = [HttpProtocol(gateway, set()) for _ in range(CONNECTIONS)]
        for connection in connections:
            connection.connection_made(_Socket())  # type: ignore[arg-type]

        async def round_() -> None:
            for connection in connections:
                connection.data_received(REQUEST_BYTES)
            await asyncio.sleep(0)  # the gateway's outbox leaves at the end of the loop's turn
            sent, transport.endpoint.sent = transport.endpoint.sent, []
            for batch in sent:  # the function answers each request in place
                gateway.receive(b"".join(
                    descriptor.hop(GATEWAY, 1, RESPONSE, 1, d.chain, 0, d.slot, d.generation, 5, d.request_id)
                    for d in unpack_many(batch)
                ))

        return await _best(round_, CONNECTIONS, rounds)
    finally:
        gateway.close()
        pool.close()


async def worker_us(rounds: int = 300) -> float:
    app = App("inprocess-worker")
    first = app.add_function(_passthrough, name="first")
    app.route("/", first >> app.add_function(_passthrough, name="second"), methods=["GET"])
    table, pool = app.compile(), Pool.create()
    worker, transport = Worker(table, app.functions["first"], pool), _InMemory(Path("/nonexistent"), table)
    try:
        await worker.start(transport)
        await asyncio.sleep(0)  # its READY leaves
        transport.endpoint.sent.clear()
        slots = [pool.alloc(100, owner=i + 1) for i in range(CONNECTIONS)]
        batch = b"".join(descriptor.hop(worker.id, GATEWAY, REQUEST, 0, 0, 0, s.id, s.generation, 10, i + 1)
                         for i, s in enumerate(slots))

        async def round_() -> None:
            worker.receive(batch)
            sent, transport.endpoint.sent = transport.endpoint.sent, []
            assert sum(map(len, sent)) == len(batch) == CONNECTIONS * SIZE

        return await _best(round_, CONNECTIONS, rounds)
    finally:
        worker.close()
        pool.close()


async def call_us(calls: int = 8, requests: int = 300) -> float:
    """A ``ctx.call`` round trip in one process (bench.apps:calls through TestClient: the call,
    the callee's run, the reply), as the CPU of a request making ``calls`` calls less one making none."""
    from bench.apps import calls as app
    from spright.testing import TestClient

    async with TestClient(app) as client:
        async def cpu_per_request(path: str) -> float:
            for _ in range(20):
                await client.get(path)
            best = float("inf")
            for _ in range(5):
                started = time.process_time()
                for _ in range(requests):
                    await client.get(path)
                best = min(best, (time.process_time() - started) / requests)
            return best

        return (await cpu_per_request(f"/calls/{calls}") - await cpu_per_request("/calls/0")) / calls * 1e6


async def main() -> None:
    print(f"gateway: {await gateway_us():.2f} us of CPU per request (HTTP in, descriptor out and back, response)")
    print(f"worker:  {await worker_us():.2f} us of CPU per descriptor (receive, handler, forward)")
    print(f"call:    {await call_us():.2f} us of CPU per ctx.call round trip (call, callee, reply)")


if __name__ == "__main__":
    uvloop.run(main())
