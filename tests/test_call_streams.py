"""``ctx.call_stream``: a caller takes a streaming function's answer part by part as the
callee yields it. In process first (TestClient: the real gateway, pool, descriptors and
workers, one loop the tests step through), then on every data plane (tests/apps/call_streams.py):
parts come before the callee ends, in order over a thousand, a consumer that leaves stops the
callee and every slot comes back, a failure midway raises CallError, a consumer that stops
taking parts stops the callee at its yield."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spright import App, CallError, Config, Context
from spright.data.descriptor import STREAM_WINDOW
from spright.testing import TestClient

app = App("call-streams", config=Config(default_timeout=5.0))


class Seen:
    """What the handlers did, for the tests to read (all in this one loop)."""

    got: list[str] = []  # parts the caller took, as it took them
    produced = 0  # parts the callee yielded and was resumed after
    finished = 0  # callees that ran to their end
    cancelled = 0  # callees that saw their cancellation
    gate: asyncio.Event  # `steps` waits on it before each part after the first
    cancel_seen: asyncio.Event  # set by `flood` when it sees its cancellation
    kept: list[Any] = []  # streams a caller kept past its handler's end


@app.function()
async def steps(ctx: Context):
    for i in range(3):
        if i:
            await Seen.gate.wait()
            Seen.gate.clear()
        yield f"part {i}"
        Seen.produced += 1
    Seen.finished += 1


@app.function()
async def count(ctx: Context):
    for i in range(int(ctx.text())):
        yield {"i": i}


@app.function()
async def flood(ctx: Context):
    """Parts until cancelled (or 10,000 of them)."""
    try:
        for i in range(10_000):
            yield b"%08d" % i
            Seen.produced += 1
        Seen.finished += 1
    except asyncio.CancelledError:
        Seen.cancelled += 1
        Seen.cancel_seen.set()
        raise


@app.function()
async def broken(ctx: Context):
    yield "a"
    yield "b"
    raise ValueError("midway")


@app.function()
async def whole(ctx: Context) -> dict:
    return {"whole": True}


@app.function()
async def relay(ctx: Context):
    """Each part of `steps` as the caller takes it, on to the client."""
    async for part in ctx.call_stream("steps"):
        Seen.got.append(part.text)
        yield part.body + b";"


@app.function()
async def ordered(ctx: Context) -> list:
    return [part.json()["i"] async for part in ctx.call_stream("count", ctx.text())]


@app.function()
async def leaves(ctx: Context) -> dict:
    """Three parts, then out of the loop: the callee must see its cancellation while this
    handler still runs."""
    async for part in ctx.call_stream("flood"):
        Seen.got.append(part.body.decode())
        if len(Seen.got) == 3:
            break
    await Seen.cancel_seen.wait()
    return {"got": Seen.got}


@app.function()
async def keeps(ctx: Context) -> str:
    """One part, the stream kept past the handler's end."""
    stream = ctx.call_stream("flood")
    Seen.kept.append(stream)
    Seen.got.append((await anext(stream)).body.decode())
    return "kept"


@app.function()
async def catches(ctx: Context) -> dict:
    got = []
    try:
        async for part in ctx.call_stream("broken"):
            got.append(part.text)
    except CallError as exc:
        return {"got": got, "status": exc.status, "detail": exc.detail, "function": exc.function}
    return {"got": got, "status": None}


@app.function()
async def stalls(ctx: Context) -> dict:
    """One part taken, then none while the test looks at the callee."""
    stream = ctx.call_stream("flood")
    Seen.got.append((await anext(stream)).body.decode())
    await Seen.gate.wait()
    rest = [part async for part in stream]
    return {"rest": len(rest)}


@app.function()
async def plain(ctx: Context) -> dict:
    joined = await ctx.call("steps")
    parts = [part.json() async for part in ctx.call_stream("whole")]
    return {"joined": joined.text, "parts": parts}


@app.function()
async def unknown(ctx: Context) -> int:
    try:
        async for _ in ctx.call_stream("nobody"):
            pass
    except CallError as exc:
        return exc.status
    return 0


for handler in (relay, ordered, leaves, keeps, catches, stalls, plain, unknown):
    app.route(f"/{handler.name}", handler, methods=["GET", "POST"])


@pytest.fixture
async def client():
    Seen.got, Seen.kept = [], []
    Seen.produced = Seen.finished = Seen.cancelled = 0
    Seen.gate, Seen.cancel_seen = asyncio.Event(), asyncio.Event()
    async with TestClient(app) as c:
        yield c
        Seen.kept.clear()
        Seen.gate.set()
        await turns(lambda: not c.gateway.pending and c.pool.in_use() == 0)


async def turns(until, limit: int = 10_000) -> None:
    """Run the loop until ``until()`` holds (everything here runs in this one loop: no clock)."""
    for _ in range(limit):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def quiet(value) -> int:
    """Run the loop until ``value()`` stops changing over a hundred turns; its last value."""
    before = -1
    while before != value():
        before = value()
        for _ in range(100):
            await asyncio.sleep(0)
    return before


async def test_each_part_reaches_the_caller_before_the_callee_goes_on(client: TestClient) -> None:
    async with client.stream("GET", "/relay") as r:
        parts = aiter(r)
        assert await anext(parts) == b"part 0;"
        assert Seen.got == ["part 0"] and Seen.finished == 0, "the callee waits for the test: the part came first"
        Seen.gate.set()
        assert await anext(parts) == b"part 1;"
        assert Seen.got == ["part 0", "part 1"] and Seen.finished == 0
        Seen.gate.set()
        assert [p async for p in parts] == [b"part 2;"]
    assert Seen.finished == 1


async def test_a_thousand_parts_reach_the_caller_in_order(client: TestClient) -> None:
    r = await client.post("/ordered", body="1000")
    assert r.status == 200 and r.json() == list(range(1000))


async def test_leaving_the_loop_cancels_the_callee_and_every_slot_comes_back(client: TestClient) -> None:
    r = await client.get("/leaves")  # it answers only once the callee saw its cancellation
    assert r.status == 200 and r.json() == {"got": ["00000000", "00000001", "00000002"]}
    assert Seen.cancelled == 1 and Seen.finished == 0
    await turns(lambda: client.pool.in_use() == 0)


async def test_a_stream_left_open_is_cancelled_when_its_callers_handler_ends(client: TestClient) -> None:
    r = await client.get("/keeps")
    assert r.status == 200 and Seen.got == ["00000000"]
    await turns(lambda: Seen.cancelled == 1)
    await turns(lambda: client.pool.in_use() == 0)
    with pytest.raises(StopAsyncIteration):  # what is left of it ends quietly
        await anext(Seen.kept[0])


async def test_a_callee_failing_midway_raises_call_error_after_its_parts(client: TestClient) -> None:
    r = await client.get("/catches")
    assert r.status == 200
    assert r.json() == {"got": ["a", "b"], "status": 500, "detail": r.json()["detail"], "function": "broken"}
    assert client.counters_of("broken")["handler_errors"] == 1


async def test_a_consumer_that_stops_taking_parts_stops_the_callee(client: TestClient) -> None:
    task = asyncio.ensure_future(client.get("/stalls"))
    await turns(lambda: Seen.got == ["00000000"])
    produced = await quiet(lambda: Seen.produced)
    assert produced <= STREAM_WINDOW, f"{produced} parts made for a consumer that took one"
    assert client.pool.in_use() <= 2 + STREAM_WINDOW, "the parts in flight hold a slot each, no more"
    Seen.gate.set()  # it takes the rest: everything comes, the callee ends
    r = await task
    assert r.status == 200 and r.json() == {"rest": 9_999} and Seen.finished == 1


async def test_a_plain_call_still_joins_and_a_plain_answer_is_one_part(client: TestClient) -> None:
    task = asyncio.ensure_future(client.get("/plain"))
    for produced in (1, 2):
        await turns(lambda: Seen.produced == produced)  # noqa: B023 (awaited here, in this turn of the loop)
        Seen.gate.set()
    r = await task
    assert r.status == 200 and r.json() == {"joined": "part 0part 1part 2", "parts": [{"whole": True}]}


async def test_a_stream_of_no_such_function_raises_at_once(client: TestClient) -> None:
    r = await client.get("/unknown")
    assert r.status == 200 and r.json() == 404
