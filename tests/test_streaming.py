"""Streamed answers in process (TestClient: the real gateway, pool, descriptors and workers):
parts leave as the handler yields them, in order; a reader that stops reading stops the
handler at its yield; one that leaves cancels it; every slot comes back."""

from __future__ import annotations

import asyncio

import pytest

from spright import App, Config, Context, sse
from spright.data.descriptor import STREAM_WINDOW
from spright.testing import StreamCut, TestClient

app = App("streams", config=Config(default_timeout=5.0))


class Seen:
    """What the handlers did, for the tests to read."""

    produced = 0  # parts yielded by `steps` (and `flood`)
    cancelled = 0  # handlers that saw their cancellation
    finished = 0
    gate: asyncio.Event | None = None  # `steps` waits on it before each part after the first
    stop: asyncio.Event | None = None  # `flood` stops yielding once it is set


@app.function()
async def steps(ctx: Context):
    """Three parts; between them it waits for the test's go."""
    assert Seen.gate is not None
    for i in range(3):
        if i:
            await Seen.gate.wait()
            Seen.gate.clear()
        yield f"part {i};"
        Seen.produced += 1
    Seen.finished += 1


@app.function()
async def flood(ctx: Context):
    """Parts of 1000 bytes until the test says stop (or the reader leaves)."""
    try:
        while Seen.stop is None or not Seen.stop.is_set():
            yield b"%08d" % Seen.produced + b"." * 992
            Seen.produced += 1
    except asyncio.CancelledError:
        Seen.cancelled += 1
        raise


@app.function()
async def shaped(ctx: Context):
    ctx.status = 201
    ctx.content_type = "text/event-stream"
    ctx.set_header("x-stream", "yes")
    yield sse({"n": 1}, event="tick", id="1")
    yield sse("two\nlines")


@app.function()
async def nothing(ctx: Context):
    if "shaped" in ctx.query:
        ctx.status = 201
        ctx.content_type = "text/event-stream"
        ctx.set_header("set-cookie", "seen=1")
    return
    yield  # an async generator that yields nothing


@app.function()
async def broken(ctx: Context):
    yield "first;"
    raise ValueError("midway")


@app.function()
async def idle(ctx: Context):
    """A part, then longer than its route's timeout before the next."""
    yield "first;"
    await asyncio.sleep(3600)
    yield "never"


@app.function()
async def paced(ctx: Context):
    """Fifteen parts 0.1 s apart: 1.5 s in all, longer than its route's timeout of 1 s."""
    for i in range(15):
        await asyncio.sleep(0.1)
        yield f"{i};"


@app.function()
async def words(ctx: Context):
    for word in ctx.text().split():
        yield word + " "


@app.function()
async def shout(ctx: Context) -> str:
    return ctx.text().upper()


@app.function()
async def caller(ctx: Context) -> bytes:
    reply = await ctx.call("words", b"called and joined")
    return reply.body


app.route("/steps", steps)
app.route("/flood", flood)
app.route("/shaped", shaped)
app.route("/nothing", nothing)
app.route("/broken", broken)
app.route("/idle", idle, timeout=0.3)
app.route("/paced", paced, timeout=1.0)  # ten times a pause: a loaded machine keeps under it
app.route("/shout", [words, shout], methods=["POST"])
app.route("/caller", caller)


@pytest.fixture
async def client():
    Seen.produced = Seen.cancelled = Seen.finished = 0
    Seen.gate, Seen.stop = asyncio.Event(), asyncio.Event()
    async with TestClient(app) as c:
        yield c
        Seen.stop.set()
        Seen.gate.set()
        await turns(lambda: not c.gateway.pending)
        assert c.pool.in_use() == 0, "every slot comes back"


async def turns(until, limit: int = 10_000) -> None:
    """Run the loop until ``until()`` holds (everything here runs in this one loop: no clock)."""
    for _ in range(limit):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_each_part_reaches_the_client_before_the_handler_goes_on(client: TestClient) -> None:
    async with client.stream("GET", "/steps") as r:
        assert r.status == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
        parts = aiter(r)
        assert await anext(parts) == b"part 0;"
        assert Seen.produced == 1 and Seen.finished == 0, "the handler waits for the test: the part came first"
        assert Seen.gate is not None
        Seen.gate.set()
        assert await anext(parts) == b"part 1;"
        assert Seen.finished == 0
        Seen.gate.set()
        assert [p async for p in parts] == [b"part 2;"]
    assert Seen.finished == 1


async def test_a_reader_that_stops_reading_stops_the_handler_and_the_pool_stays_small(client: TestClient) -> None:
    room = 2
    async with client.stream("GET", "/flood", room=room) as r:
        parts = aiter(r)
        first = await anext(parts)
        assert first.startswith(b"00000000")
        # the reader holds `room` parts and reads no more: the handler must stop at its yield
        await turns(lambda: Seen.produced > 0 and client.pool.in_use() > 0)
        before = -1
        while before != Seen.produced:  # until it made no progress over a hundred turns of the loop
            before = Seen.produced
            for _ in range(100):
                await asyncio.sleep(0)
        assert Seen.produced <= 1 + room + 2 * STREAM_WINDOW, f"{Seen.produced} parts made for a stopped reader"
        assert client.pool.in_use() <= 1 + 2 * STREAM_WINDOW
        # reading again: everything arrives, in order
        assert Seen.stop is not None
        got = [first]
        async for part in parts:
            got.append(part)
            if len(got) == 200:
                Seen.stop.set()
    assert [int(p[:8]) for p in got] == list(range(len(got))) and len(got) >= 200


async def test_a_reader_that_leaves_cancels_the_handler_and_frees_every_slot(client: TestClient) -> None:
    async with client.stream("GET", "/flood") as r:
        parts = aiter(r)
        for _ in range(5):
            await anext(parts)
    await turns(lambda: Seen.cancelled == 1)
    await turns(lambda: client.pool.in_use() == 0)
    assert client.gateway.streams == {} and client.gateway.pending == {}


async def test_status_content_type_and_headers_set_before_the_first_part_lead_the_answer(
        client: TestClient) -> None:
    r = await client.get("/shaped")
    assert r.status == 201
    assert r.headers["content-type"] == "text/event-stream" and r.headers["x-stream"] == "yes"
    assert r.body == b'event: tick\nid: 1\ndata: {"n":1}\n\ndata: two\ndata: lines\n\n'


async def test_a_stream_of_no_part_is_an_empty_answer_with_the_head_it_set(client: TestClient) -> None:
    r = await client.get("/nothing")
    assert r.status == 200 and r.body == b""
    r = await client.get("/nothing?shaped")
    assert r.status == 201 and r.body == b""
    assert r.headers["content-type"] == "text/event-stream" and r.headers["set-cookie"] == "seen=1"


async def test_a_handler_failing_midway_cuts_the_answer_short(client: TestClient) -> None:
    async with client.stream("GET", "/broken") as r:
        assert r.status == 200
        got = []
        with pytest.raises(StreamCut):
            async for part in r:
                got.append(part)
    assert got == [b"first;"]
    assert client.counters_of("broken")["handler_errors"] == 1


async def test_the_route_timeout_runs_between_parts_not_over_the_whole_stream(client: TestClient) -> None:
    r = await client.get("/paced")  # 1.5 s in all, never 1 s between two parts
    assert r.status == 200 and r.body == b"".join(b"%d;" % i for i in range(15))
    async with client.stream("GET", "/idle") as r:
        got = []
        with pytest.raises(StreamCut):
            async for part in r:
                got.append(part)
    assert got == [b"first;"]


async def test_a_head_request_gets_the_head_and_the_handler_stops(client: TestClient) -> None:
    r = await client.head("/flood")
    assert r.status == 200 and r.body == b"" and r.headers["content-type"] == "application/octet-stream"
    await turns(lambda: Seen.cancelled == 1)


async def test_mid_chain_and_through_a_call_the_parts_are_joined(client: TestClient) -> None:
    r = await client.post("/shout", body="streamed words mid chain")
    assert r.status == 200 and r.text == "STREAMED WORDS MID CHAIN "
    r = await client.get("/caller")
    assert r.status == 200 and r.body == b"called and joined "


def test_sse_frames_each_field_on_its_own_line() -> None:
    assert sse("a\r\nb\rc") == "data: a\ndata: b\ndata: c\n\n"
    assert sse([1, 2], event="e", id="7", retry=1500) == "event: e\nid: 7\nretry: 1500\ndata: [1,2]\n\n"
    with pytest.raises(ValueError, match="one line"):
        sse("x", event="two\nlines")
