"""The http data plane's queue-proxy sidecar on its own: it counts, holds what is over its
concurrency limit until the function answers, answers each sender in order, serves its
counters, and answers 502 when the function is unreachable (a node runs it in tests/test_node.py
and the contract suite as ``http+sidecar``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from spright.testing import free_port
from spright.transport.sidecar import Sidecar, read_counters


class HeldFunction(asyncio.Protocol):
    """A function's server that answers 204 only when the test releases a request."""

    def __init__(self, arrived: asyncio.Queue[bytes]) -> None:
        self.arrived = arrived
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                return
            self.arrived.put_nowait(rest[:length])
            self.buffer = rest[length:]

    def release(self) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def post(body: bytes) -> bytes:
    return b"POST /spright/descriptor HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def read_answers(reader: asyncio.StreamReader, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        status = int((await asyncio.wait_for(reader.readline(), 5)).split()[1])
        while await reader.readline() != b"\r\n":  # the rest of the head
            pass
        statuses.append(status)
    return statuses


async def test_over_the_limit_waits_and_every_sender_is_answered_in_order(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[bytes] = asyncio.Queue()
    functions: list[HeldFunction] = []
    upstream_port = free_port()
    upstream = await loop.create_server(lambda: functions.append(HeldFunction(arrived)) or functions[-1],
                                        "127.0.0.1", upstream_port)
    counters = tmp_path / "c"
    proxy = Sidecar(upstream_port, concurrency=2, counters_path=counters)
    port = free_port()
    server = await proxy.listen(port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(post(b"r%d" % i) for i in range(5)))
        assert [await asyncio.wait_for(arrived.get(), 5) for _ in range(2)] == [b"r0", b"r1"]
        await asyncio.sleep(0.1)
        assert arrived.empty(), "the limit is 2: the rest wait in the sidecar"
        assert read_counters(counters) == {"requests": 5, "in_flight": 2, "queued": 3, "failed": 0}
        for expected in (b"r2", b"r3", b"r4"):
            functions[0].release()
            assert await asyncio.wait_for(arrived.get(), 5) == expected
        functions[0].release()
        functions[0].release()
        assert await read_answers(reader, 5) == [204] * 5
        assert read_counters(counters) == {"requests": 5, "in_flight": 0, "queued": 0, "failed": 0}
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        assert await read_answers(reader, 1) == [200]
        assert b"spright_sidecar_requests 5" in await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
    finally:
        server.close()
        upstream.close()
        proxy.close()


async def test_an_unreachable_function_costs_502s_not_a_hang(tmp_path: Path) -> None:
    counters = tmp_path / "c"
    proxy = Sidecar(free_port(), concurrency=1, counters_path=counters)  # nobody listens upstream
    port = free_port()
    server = await proxy.listen(port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(b"a") + post(b"b") + post(b"c"))
        assert await read_answers(reader, 3) == [502] * 3
        assert read_counters(counters) == {"requests": 3, "in_flight": 0, "queued": 0, "failed": 3}
        writer.close()
    finally:
        server.close()
        proxy.close()
