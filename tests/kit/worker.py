"""One real ``Worker`` in this process, on the in-process transport: what the worker's
dispatch tests (test_runtime, test_places) drive descriptor by descriptor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spright import App, Context
from spright.data import descriptor
from spright.data.descriptor import GATEWAY, REQUEST, Descriptor, unpack_many
from spright.host.pool import Pool
from spright.transport.local import LocalTransport
from spright.worker.runtime import Worker


async def waits(ctx: Context) -> bytes:
    await asyncio.sleep(0)
    return b"ok"


class Harness:
    """One real Worker on the in-process transport; ``received`` is what reached the gateway."""

    def __init__(self, handler: Callable[[Context], Any], concurrency: int = 64, timeout: float | None = None) -> None:
        self.app = App("harness")
        self.app.route("/", self.app.add_function(handler, name="fn", concurrency=concurrency), timeout=timeout)
        self.table = self.app.compile()
        self.pool = Pool.create()
        self.received: list[bytes] = []

    async def __aenter__(self) -> Harness:
        transport = LocalTransport(Path("/nonexistent"), self.table)
        await transport.attach(GATEWAY, self.received.append)
        self.worker = Worker(self.table, self.app.functions["fn"], self.pool)
        await self.worker.start(transport)
        while not self.received:  # the worker's READY
            await asyncio.sleep(0)
        self.received.clear()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.worker.close()
        self.pool.close()

    def send(self, count: int) -> None:
        slots = [self.pool.alloc(64, owner=i + 1) for i in range(count)]
        self.worker.receive(b"".join(
            descriptor.hop(self.worker.id, GATEWAY, REQUEST, 0, 0, 0, s.id, s.generation, 0, i + 1)
            for i, s in enumerate(slots)
        ))

    def answers(self) -> list[Descriptor]:
        out = [d for batch in self.received for d in unpack_many(batch)]
        for d in out:
            assert self.pool.read(d.slot, d.length) == b"ok"
            self.pool.free(d.slot, d.generation)
        return out
