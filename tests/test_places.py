"""A function's concurrency places come back whatever happens to a handler's Task, even one
cancelled before its first step (issue 21, item 5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from spright import App, Context
from spright.data.descriptor import ERROR, RESPONSE, SIZE, unpack_many
from spright.host.counters import IN_FLIGHT
from spright.testing import TestClient
from spright.worker import runtime
from spright.worker.tasks import PAST_DEADLINE
from tests.kit.worker import Harness, waits


async def turns_until(done: Callable[[], bool], turns: int = 100) -> None:
    """Let the loop run until ``done()``, for at most ``turns`` turns (a count, not a clock)."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(0)


async def test_a_handler_cancelled_before_its_first_step_gives_its_place_back_and_answers_504(monkeypatch) -> None:
    """What uvloop does when a request's deadline is due as its Task is created: the timer runs
    before the Task's first step, so the handler's coroutine never starts."""
    cancelled: list[asyncio.Task[None]] = []

    def start_then_cancel(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = loop.create_task(coro)
        if not cancelled:  # the first handler only
            task.cancel(PAST_DEADLINE)
            cancelled.append(task)
        return task

    monkeypatch.setattr(runtime, "start_task", start_then_cancel)
    async with Harness(waits, concurrency=1) as h:
        h.send(2)  # the second waits in the backlog for the only place
        await turns_until(lambda: sum(map(len, h.received)) >= 2 * SIZE)
        answered = [d for batch in h.received for d in unpack_many(batch)]
        assert len(answered) == 2, f"{len(answered)} of 2 answered: the cancelled handler kept the only place"
        first, second = answered
        assert first.kind == ERROR and first.status == 504, "the cancelled request is answered, not left to time out"
        assert second.kind == RESPONSE and h.pool.read(second.slot, second.length) == b"ok", "the place came back"
        assert h.worker.counters[IN_FLIGHT] == 0, "no place is taken, none waits"
        assert cancelled[0].cancelled()


def reporters_app(timeout: float) -> tuple[App, dict[str, asyncio.Event]]:
    """``stuck`` (one place) and ``busy``: each hangs on ``?hang=1``; ``busy``, cancelled at its
    deadline, keeps the loop busy for 3 ms (the report's loop, busy after a cancellation)."""
    app = App("places")
    started = {"stuck": asyncio.Event(), "busy": asyncio.Event()}

    def hangs(name: str, busy_for: float) -> Callable[[Context], Coroutine[Any, Any, str]]:
        async def handler(ctx: Context) -> str:
            if ctx.query.get("hang"):
                started[name].set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    time.sleep(busy_for)
                    raise
            return "free"
        return handler

    stuck = app.add_function(hangs("stuck", 0), name="stuck", concurrency=1)
    app.route("/stuck", stuck, timeout=timeout)
    app.route("/stuck/patient", stuck, timeout=10)  # a slow machine does not fail this one
    app.route("/busy", app.add_function(hangs("busy", 0.003), name="busy"), timeout=timeout)
    return app, started


def test_under_uvloop_a_request_started_at_its_deadline_never_leaks_the_only_place() -> None:
    """The reporter's scenario: ``stuck`` has one place; A hangs in it, B waits behind it. At
    A's deadline A is cancelled, which frees the place and starts B, whose own deadline is a
    millisecond away; then a handler of another function cancelled in the same turn keeps the
    loop busy for 3 ms, and uvloop runs B's due deadline before B's first step. Every later
    request must still be served (before the fix, the place leaked: every later one was a 504)."""

    async def trials() -> tuple[list[tuple[int, ...]], int]:
        app, started = reporters_app(timeout=0.02)
        statuses = []
        async with TestClient(app) as client:
            stuck = next(w for w in client.workers if w.function.name == "stuck")
            for _ in range(10):
                for event in started.values():
                    event.clear()
                hung = [asyncio.ensure_future(client.get(path)) for path in ("/stuck?hang=1", "/busy?hang=1")]
                await asyncio.gather(*(event.wait() for event in started.values()))
                time.sleep(0.0015)  # B arrives a moment after A (loop time has a ms grain): due just after it
                queued = asyncio.ensure_future(client.get("/stuck"))
                answers = await asyncio.gather(*hung, queued)
                later = await client.get("/stuck/patient")  # waits for the place; 504 if it leaked
                statuses.append((*(r.status for r in answers), later.status))
                if later.status != 200:
                    break  # the place leaked: the next A would wait for it for good
            return statuses, stuck.counters[IN_FLIGHT]

    loop = uvloop.new_event_loop()
    try:
        statuses, places_taken = loop.run_until_complete(trials())
    finally:
        loop.close()
    assert all(later == 200 for *_, later in statuses), statuses
    assert places_taken == 0
