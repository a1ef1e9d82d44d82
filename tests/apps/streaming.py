"""Streamed answers on a real node (tests/test_streaming_node.py): parts counted by the
function that streams them, in one process with the functions that report on it."""

import asyncio

from spright import App, Config, Context, sse

app = App("streaming", config=Config(default_timeout=5.0))

produced: dict[str, int] = {}  # per stream key: parts yielded so far
cancelled: dict[str, str] = {}  # stream key -> why its handler was cancelled (the CancelledError's message)


@app.function(process="streams")
async def count(ctx: Context):
    """``n`` parts ``"<i>\\n"``, each ``size`` bytes at least (padded with dots)."""
    n, size, key = int(ctx.query.get("n", "10")), int(ctx.query.get("size", "0")), ctx.query.get("key", "")
    produced[key] = 0
    try:
        for i in range(n):
            yield f"{i}\n".rjust(size, ".")
            produced[key] = i + 1
    except asyncio.CancelledError as exc:
        cancelled[key] = str(exc.args[0]) if exc.args else ""
        raise


@app.function(process="streams")
async def report(ctx: Context) -> dict:
    key = ctx.query.get("key", "")
    return {"produced": produced.get(key), "cancelled": cancelled.get(key)}


@app.function()
async def ticker(ctx: Context):
    ctx.content_type = "text/event-stream"
    ctx.set_header("cache-control", "no-cache")
    for i in range(int(ctx.query.get("n", "3"))):
        yield sse({"i": i}, event="tick", id=str(i))


@app.function()
async def shout(ctx: Context) -> str:
    return ctx.text().upper()


@app.function()
async def words(ctx: Context):
    for word in ctx.text().split():
        yield word + " "


app.route("/count", count, timeout=600)  # a client that leaves, not the timeout, must stop it
app.route("/report", report)
app.route("/ticks", ticker)
app.route("/shout", [words, shout], methods=["POST"])  # a stream mid-chain: its parts joined
