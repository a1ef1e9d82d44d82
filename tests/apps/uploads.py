"""Streamed request bodies on a real node (tests/test_body_streams.py): functions that read their
body as it arrives (``stream_body=True``), in one process with the one that reports on them.
``max_body`` is 1 MiB, so every upload the tests send is past it."""

import asyncio
import hashlib

from spright import App, Config, Context, PoolConfig

app = App("uploads", config=Config(default_timeout=30.0, pool=PoolConfig(max_body=1 << 20)))

seen: dict[str, dict] = {}  # per upload key: bytes and chunks read so far, how the handler ended
gates: dict[str, asyncio.Event] = {}  # per key: set by /release, awaited by `held`


def _state(key: str) -> dict:
    return seen.setdefault(key, {"bytes": 0, "chunks": 0, "cancelled": None, "done": False})


@app.function(process="uploads", stream_body=True)
async def count(ctx: Context) -> dict:
    """The body's size and SHA-256, read chunk by chunk."""
    digest, size, chunks = hashlib.sha256(), 0, 0
    async for chunk in ctx.stream():
        digest.update(chunk)
        size += len(chunk)
        chunks += 1
    return {"bytes": size, "sha256": digest.hexdigest(), "chunks": chunks}


@app.function(process="uploads", stream_body=True)
async def echo(ctx: Context):
    """Each chunk's size, as a part of its answer, as the chunk comes (upload and answer at once)."""
    async for chunk in ctx.stream():
        yield f"{len(chunk)}\n"


@app.function(process="uploads", stream_body=True)
async def held(ctx: Context) -> dict:
    """Reads the first chunk, then waits for /release before reading the rest; records
    progress and how it ended (the cancel message it saw) under ``key``."""
    key = ctx.query["key"]
    state = _state(key)
    gate = gates.setdefault(key, asyncio.Event())
    digest = hashlib.sha256()
    try:
        async for chunk in ctx.stream():
            digest.update(chunk)
            state["bytes"] += len(chunk)
            state["chunks"] += 1
            await gate.wait()
    except asyncio.CancelledError as exc:
        state["cancelled"] = list(exc.args)
        raise
    state["done"] = True
    return {"bytes": state["bytes"], "sha256": digest.hexdigest()}


@app.function(process="uploads", stream_body=True)
async def first(ctx: Context) -> dict:
    """Returns after the first chunk: the rest of the body is dropped."""
    async for chunk in ctx.stream():
        return {"first": len(chunk)}
    return {"first": 0}


@app.function(process="uploads", stream_body=True)
async def relay(ctx: Context) -> dict:
    """Reads its body and a streamed call's parts by turns: both come to this instance at once."""
    stream = ctx.call_stream("pieces", 40)
    size, parts = 0, []
    async for chunk in ctx.stream():
        size += len(chunk)
        if (part := await anext(stream, None)) is not None:
            parts.append(part.text)
    parts += [part.text async for part in stream]
    return {"bytes": size, "parts": "".join(parts)}


@app.function()
async def pieces(ctx: Context):
    """A streamed answer (in its own process: its parts cross the data plane) of ``n`` parts."""
    for i in range(ctx.json()):
        yield f"{i},"


@app.function(process="uploads")
async def report(ctx: Context) -> dict:
    return _state(ctx.query["key"])


@app.function(process="uploads")
async def release(ctx: Context) -> dict:
    gates.setdefault(ctx.query["key"], asyncio.Event()).set()
    return {}


@app.function()
async def whole(ctx: Context) -> dict:
    return {"bytes": len(ctx.body)}


app.route("/count", count, methods=["POST", "PUT"])
app.route("/echo", echo, methods=["POST"])
app.route("/held", held, methods=["POST"])
app.route("/first", first, methods=["POST"])
app.route("/report", report)
app.route("/release", release, methods=["POST"])
app.route("/whole", whole, methods=["POST"])
app.route("/relay", relay, methods=["POST"])
