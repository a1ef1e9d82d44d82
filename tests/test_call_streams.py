"""``ctx.call_stream``: a caller takes a streaming function's answer part by part as the
callee yields it. In process first (TestClient: the real gateway, pool, descriptors and
workers, one loop the tests step through), then on every data plane (tests/apps/call_streams.py):
parts come before the callee ends, in order over a thousand, a consumer that leaves stops the
callee and every slot comes back, a failure midway raises CallError, a consumer that stops
taking parts stops the callee at its yield."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from spright import App, CallError, Config, Context
from spright.data.descriptor import PART, STREAM_WINDOW, Descriptor
from spright.data.reorder import Reorder
from spright.ops.nodes import choose_node
from spright.testing import TestClient, node_metric, run_node

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


# -- the reordering both readers share ---------------------------------------------------------
def test_parts_delivered_in_any_order_within_the_window_come_out_in_order() -> None:
    rng = random.Random(7)
    order, out, sent = Reorder(), [], 0
    while sent < 1000:  # a window's worth in flight, delivered shuffled, numbers wrapping at 256
        batch = [Descriptor(0, 1, PART, n & 0xFF, 0, 0, n, 1, 1, 1, 1) for n in range(sent, sent + STREAM_WINDOW)]
        sent += STREAM_WINDOW
        rng.shuffle(batch)
        for d in batch:
            part = order.put(d)
            while part is not None:
                out.append(part.slot)
                part = order.next()
    assert out == list(range(1000)) and not order.early
    order.finish(Descriptor(0, 1, 0x9, 1000 & 0xFF, 0, 0, 0, 0, 1, 1, 1))
    assert order.complete


# -- on every data plane ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def node(transport: str, runtime_dir: Path) -> Iterator[int]:
    with run_node("tests.apps.call_streams:app", transport=transport) as (port, _):
        yield port


async def until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll a running node until ``condition()`` holds (a generous bound: never a timing assert)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def session(node: int):
    async with aiohttp.ClientSession(f"http://127.0.0.1:{node}") as s:
        yield s
    await until(lambda: node_metric(node, "spright_pool_slots_in_use") == 0, "every slot back in the pool")


async def test_node_parts_reach_the_caller_before_the_callee_goes_on(session: aiohttp.ClientSession) -> None:
    """`relay` forwards each part of `steps` to the client as it takes it; `steps` waits for
    the test's go (/opener) before each part after the first: a part the client reads before
    the go was taken by the caller before the callee could finish."""
    async with session.get("/relay", params={"key": "k1"}) as r:
        assert r.status == 200
        seen = b""
        for i in range(3):
            while f"part {i};".encode() not in seen:
                chunk = await r.content.readany()
                assert chunk, f"the stream ended before part {i}: {seen!r}"
                seen += chunk
            assert f"part {i + 1}".encode() not in seen
            if i < 2:
                async with session.get("/opener", params={"key": "k1"}) as opened:
                    assert opened.status == 200
        assert seen + await r.read() == b"part 0;part 1;part 2;"


async def test_node_a_thousand_parts_reach_the_caller_in_order(session: aiohttp.ClientSession) -> None:
    async with session.post("/ordered", data="1000") as r:
        assert r.status == 200 and await r.json() == list(range(1000))


async def test_node_leaving_the_loop_cancels_the_callee(session: aiohttp.ClientSession) -> None:
    async with session.get("/leaves", params={"key": "k2"}) as r:  # it answers once the callee saw it
        assert r.status == 200 and await r.json() == [0, 1, 2]
    # (the session's end waits for every slot to come back)


async def test_node_a_callee_failing_midway_raises_call_error(session: aiohttp.ClientSession) -> None:
    async with session.get("/catches") as r:
        answer = await r.json()
    # planes that move descriptors over several connections may deliver the ERROR before a part
    assert answer["status"] == 500 and answer["function"] == "broken"
    assert answer["got"] == ["a", "b"][: len(answer["got"])]


async def test_node_a_consumer_that_stops_taking_parts_stops_the_callee(session: aiohttp.ClientSession) -> None:
    async with session.get("/stalls", params={"key": "k3"}) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["probed"] <= STREAM_WINDOW, f"{answer['probed']} parts made for a caller that took one"
    assert answer["parts"] == list(range(100)), "then the rest, in order"


LAZY_INSTANCES = 'spright_instances{domain="call-streams",function="lazy"}'


async def test_node_a_stream_from_a_function_at_zero_goes_through_the_activator(
        node: int, session: aiohttp.ClientSession) -> None:
    """Its parts, END, the caller's CREDIT (50 parts: more than a window) all relayed."""
    for _ in range(2):
        async with session.post("/ordered", params={"fn": "lazy"}, data="50") as r:
            assert r.status == 200 and await r.json() == list(range(50))
        await until(lambda: node_metric(node, LAZY_INSTANCES) == 0 and not any(w.startswith("lazy") for w in
                                                                     choose_node(port=node).workers),
                    "lazy scaled to zero")
    reasons = [d["reason"] for d in choose_node(port=node).scaling if d["function"] == "lazy"]
    assert sum(r.startswith("activator: ") for r in reasons) >= 1, reasons
