"""``ctx.call_stream`` on a real node (tests/test_call_streams.py): callers in one process,
the streaming callees in another with the functions that open their gates and report on
them (per stream key), and a callee that scales to zero (its stream relayed by the activator)."""

import asyncio

from spright import App, CallError, Config, Context
from spright.data.autoscale import ScalePolicy

app = App("call-streams", config=Config(default_timeout=10.0))

gates: dict[str, asyncio.Event] = {}  # per key: `steps` waits on it before each part after the first
cancelled: dict[str, asyncio.Event] = {}  # per key: set when `flood` sees its cancellation
produced: dict[str, int] = {}  # per key: parts `flood` yielded and was resumed after


def _event(events: dict[str, asyncio.Event], key: str) -> asyncio.Event:
    return events.setdefault(key, asyncio.Event())


# -- the callees' process ---------------------------------------------------------------------
@app.function(process="callees")
async def steps(ctx: Context):
    gate = _event(gates, ctx.text())
    for i in range(3):
        if i:
            await gate.wait()
            gate.clear()
        yield f"part {i}"


@app.function(process="callees")
async def opener(ctx: Context) -> str:
    _event(gates, ctx.query["key"]).set()
    return "open"


@app.function(process="callees")
async def count(ctx: Context):
    for i in range(int(ctx.text())):
        yield {"i": i}


@app.function(process="callees")
async def flood(ctx: Context):
    """Up to ``limit`` parts of 1000 bytes; counts them, and says when it is cancelled."""
    key, limit = ctx.json()["key"], ctx.json()["limit"]
    produced[key] = 0
    try:
        for i in range(limit):
            yield b"%08d" % i + b"." * 992
            produced[key] = i + 1
    except asyncio.CancelledError:
        _event(cancelled, key).set()
        raise


@app.function(process="callees")
async def was_cancelled(ctx: Context) -> bool:
    """Answers once `flood` of this key saw its cancellation (or the route's timeout fails it)."""
    await _event(cancelled, ctx.text()).wait()
    return True


@app.function(process="callees")
async def probe(ctx: Context) -> int:
    """Parts `flood` of this key made, once it made none over a hundred turns of this process's loop."""
    key, before = ctx.text(), -1
    while before != produced.get(key, 0):
        before = produced.get(key, 0)
        for _ in range(100):
            await asyncio.sleep(0)
    return before


@app.function(process="callees")
async def broken(ctx: Context):
    yield "a"
    yield "b"
    raise ValueError("midway")


@app.function(autoscale=ScalePolicy(min_instances=0, scale_to_zero_grace=1))
async def lazy(ctx: Context):
    for i in range(int(ctx.text())):
        yield {"i": i}


# -- the callers' process ---------------------------------------------------------------------
@app.function(process="callers")
async def relay(ctx: Context):
    """Each part of `steps` on to the client as this caller takes it."""
    async for part in ctx.call_stream("steps", ctx.query["key"]):
        yield part.body + b";"


@app.function(process="callers")
async def ordered(ctx: Context) -> list:
    return [part.json()["i"] async for part in ctx.call_stream(ctx.query.get("fn", "count"), ctx.text())]


@app.function(process="callers")
async def leaves(ctx: Context) -> list:
    """Three parts, then out of the loop: answers once the callee saw its cancellation."""
    key, got = ctx.query["key"], []
    async for part in ctx.call_stream("flood", {"key": key, "limit": 1_000_000}):
        got.append(int(part.body[:8]))
        if len(got) == 3:
            break
    await ctx.call("was_cancelled", key)
    return got


@app.function(process="callers")
async def stalls(ctx: Context) -> dict:
    """One part taken, then none while `probe` watches the callee; then the rest."""
    key = ctx.query["key"]
    stream = aiter(ctx.call_stream("flood", {"key": key, "limit": 100}))
    first = int((await anext(stream)).body[:8])
    probed = (await ctx.call("probe", key)).json()
    rest = [int(part.body[:8]) async for part in stream]
    return {"probed": probed, "parts": [first, *rest]}


@app.function(process="callers")
async def catches(ctx: Context) -> dict:
    got = []
    try:
        async for part in ctx.call_stream("broken"):
            got.append(part.text)
    except CallError as exc:
        return {"got": got, "status": exc.status, "function": exc.function}
    return {"got": got, "status": None}


for function in (relay, ordered, leaves, stalls, catches, opener):
    app.route(f"/{function.name}", function, methods=["GET", "POST"])
