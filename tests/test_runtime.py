"""The worker's scheduling: handlers with no await point run inline (no Task), and what one
batch produced leaves in one send (test_node checks their context isolation on real nodes)."""

from __future__ import annotations

import asyncio
import time

from spright import Context
from spright.data.descriptor import ERROR, RESPONSE, SIZE, unpack_many
from spright.host.counters import HANDLED
from spright.worker.tasks import never_suspends
from tests.kit.worker import Harness, waits


async def answers(ctx: Context) -> bytes:
    return b"ok"


async def sleeps_a_little(ctx: Context) -> bytes:
    await asyncio.sleep(0.2)
    return b"ok"


async def holds(ctx: Context) -> None:
    async with asyncio.timeout(1):
        pass


def plain(ctx: Context) -> bytes:
    return b"ok"


def blocks(ctx: Context) -> bytes:
    time.sleep(0.15)  # holds the worker's loop: nothing else runs, not even a deadline
    return b"ok"


def test_only_coroutines_without_an_await_point_run_inline() -> None:
    assert never_suspends(answers)
    assert not never_suspends(waits) and not never_suspends(holds)
    assert not never_suspends(plain)  # sync handlers may return an awaitable: they get a Task
    assert not never_suspends(lambda ctx: answers(ctx))


async def test_what_one_batch_produced_leaves_in_one_send() -> None:
    async with Harness(answers) as h:
        h.send(10)
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(h.received) == 1 and len(h.received[0]) == 10 * SIZE
        descriptors = h.answers()
        assert [d.kind for d in descriptors] == [RESPONSE] * 10
        assert [d.request_id for d in descriptors] == list(range(1, 11))


async def test_drain_waits_for_handlers_in_flight() -> None:
    async with Harness(sleeps_a_little) as h:
        idle = asyncio.ensure_future(h.worker.drain())
        await asyncio.sleep(0)
        assert idle.done(), "nothing in flight: drain returns at once"
        h.send(3)
        await asyncio.gather(h.worker.drain(), h.worker.drain())  # two waiters, one event
        await asyncio.sleep(0)  # the in-process transport delivers on the next loop turn
        assert [d.kind for d in h.answers()] == [RESPONSE] * 3, "drain returned before the handlers finished"


async def test_handlers_that_finish_in_time_leave_nothing_to_cancel() -> None:
    async with Harness(waits) as h:
        h.send(5)
        assert len(h.worker._running) == 5  # each Task is watched for its chain's timeout
        for _ in range(4):
            await asyncio.sleep(0)
        assert len(h.answers()) == 5
        assert not h.worker._running, "a finished handler is no longer watched"


async def test_a_request_that_waited_past_its_timeout_for_a_place_is_answered_504_unrun() -> None:
    async with Harness(blocks, concurrency=1, timeout=0.1) as h:
        h.send(2)  # the second waits in the backlog while the first holds the only place
        while sum(map(len, h.received)) < 2 * SIZE:
            await asyncio.sleep(0.01)
        first, second = (d for batch in h.received for d in unpack_many(batch))
        assert first.kind == RESPONSE and h.pool.read(first.slot, first.length) == b"ok"
        assert second.kind == ERROR and second.status == 504
        assert b"waited past" in h.pool.read(second.slot, second.length)
        assert h.worker.counters[HANDLED] == 1, "the second handler never ran"


async def test_closing_a_worker_ends_the_handlers_the_drain_left_running() -> None:
    """A node whose drain timed out closes its workers, then its memory: a handler still running
    must end (cancelled) before ``closed()`` returns, and a waiting one must never start, so
    that none writes the counters or a slot of memory already released."""
    ended: list[str] = []

    async def hangs(ctx: Context) -> bytes:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        return b"never"

    async with Harness(hangs, concurrency=1, timeout=60) as h:
        h.send(2)  # one runs, one waits for its place
        await asyncio.sleep(0)
        h.worker.close()
        await h.worker.closed()
        assert ended == ["cancelled"], "a handler outlived closed(), or the waiting one started"
        handled = h.worker.counters[HANDLED]
        for _ in range(3):
            await asyncio.sleep(0)
        assert h.worker.counters[HANDLED] == handled
