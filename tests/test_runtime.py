"""The worker's scheduling: handlers with no await point run inline (no Task), and what one
batch produced leaves in one send (test_node checks their context isolation on real nodes)."""

import asyncio
from pathlib import Path

from spright import App, Context
from spright.descriptor import GATEWAY, REQUEST, RESPONSE, SIZE, pack, unpack_many
from spright.pool import Pool
from spright.runtime import Worker, never_suspends
from spright.transport.local import LocalTransport


async def answers(ctx: Context) -> bytes:
    return b"ok"


async def waits(ctx: Context) -> bytes:
    await asyncio.sleep(0)
    return b"ok"


async def holds(ctx: Context) -> None:
    async with asyncio.timeout(1):
        pass


def plain(ctx: Context) -> bytes:
    return b"ok"


def test_only_coroutines_without_an_await_point_run_inline() -> None:
    assert never_suspends(answers)
    assert not never_suspends(waits) and not never_suspends(holds)
    assert not never_suspends(plain)  # sync handlers may return an awaitable: they get a Task
    assert not never_suspends(lambda ctx: answers(ctx))


async def test_what_one_batch_produced_leaves_in_one_send() -> None:
    app = App("batch")
    app.route("/", app.add_function(answers, name="answers"))
    table = app.compile()
    pool = Pool.create()
    try:
        transport = LocalTransport(Path("/nonexistent"), table)
        received: list[bytes] = []
        await transport.attach(GATEWAY, received.append)
        worker = Worker(table, app.functions["answers"], pool)
        await worker.start(transport)
        while not received:  # the worker's READY
            await asyncio.sleep(0)
        received.clear()

        slots = [pool.alloc(64, owner=i + 1) for i in range(10)]
        worker.receive(b"".join(
            pack(worker.id, GATEWAY, REQUEST, 0, 0, 0, s.id, 0, i + 1, 0, s.generation) for i, s in enumerate(slots)
        ))
        for _ in range(3):
            await asyncio.sleep(0)

        assert len(received) == 1 and len(received[0]) == 10 * SIZE
        answers_ = unpack_many(received[0])
        assert [d.kind for d in answers_] == [RESPONSE] * 10
        assert [d.request_id for d in answers_] == list(range(1, 11))
        for d in answers_:
            assert pool.read(d.slot, d.length) == b"ok"
            pool.free(d.slot, d.generation)
        worker.close()
    finally:
        pool.close()
