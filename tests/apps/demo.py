"""A small app touching every user-facing contract; used by TestClient and node tests."""

import asyncio
from contextvars import ContextVar

from spright import App, Context, HTTPError, PoolConfig

app = App("demo", pool=PoolConfig(classes=((4096, 64), (65536, 16), (1 << 20, 8)), large_slots=2))


@app.function()
async def upper(ctx: Context) -> bytes:
    view = ctx.body
    view[:] = bytes(view).upper()  # in place, in shared memory
    return view


@app.function()
async def tag(ctx: Context) -> bytes:
    return ctx.bytes() + b"!"


@app.function()
def info(ctx: Context) -> dict:  # a sync handler
    return {
        "method": ctx.method,
        "path": ctx.path,
        "params": ctx.params,
        "query": ctx.query,
        "agent": ctx.headers.get("user-agent"),
        "session": ctx.cookies.get("session"),
        "request_id": ctx.request_id,
    }


@app.function()
async def page(ctx: Context) -> str:
    ctx.status = 201
    ctx.content_type = "text/html; charset=utf-8"
    ctx.set_header("x-page", "yes")
    return "<p>" + "x" * 50_000 + "</p>"


@app.function()
async def adder(ctx: Context) -> dict:
    numbers = ctx.json()
    if not isinstance(numbers, list):
        raise HTTPError(400, "expected a JSON list of numbers")
    return {"sum": sum(numbers)}


@app.function()
async def total(ctx: Context) -> dict:
    """Fans out concurrent internal calls and combines them."""
    halves = ctx.json()
    first, second = await asyncio.gather(ctx.call("adder", halves[0]), ctx.call("adder", halves[1]))
    return {"total": first.json()["sum"] + second.json()["sum"]}


@app.function()
async def boom(ctx: Context) -> None:
    raise RuntimeError("the handler broke")


@app.function()
async def sleepy(ctx: Context) -> str:
    await asyncio.sleep(float(ctx.query.get("s", "1")))
    return "slept"


_calls_seen: ContextVar[int] = ContextVar("calls_seen", default=0)


@app.function()
async def context_count(ctx: Context) -> str:
    """No await point (it runs inline): a context variable set here must not reach the next
    request."""
    previous = _calls_seen.get()
    _calls_seen.set(previous + 1)
    return str(previous)


@app.function(concurrency=1)
async def stuck(ctx: Context) -> str:
    """Hangs for good when asked (``?hang=1``): only the chain's timeout can end it."""
    if ctx.query.get("hang"):
        await asyncio.Event().wait()
    return "free"


@app.function()
async def grow(ctx: Context) -> bytes:
    return ctx.bytes() * int(ctx.query.get("times", "2"))


app.route("/echo", upper >> tag >> tag, methods=["POST"])
app.route("/tag", tag, methods=["POST"])  # the body exactly as sent, plus "!"
app.route("/info/{item}", info, methods=["GET", "POST"])
app.route("/files/{rest:path}", info)  # the rest of the path, slashes and all
app.route("/page", page)
app.route("/add", adder, methods=["POST"])
app.route("/total", total, methods=["POST"])
app.route("/boom", boom)
app.route("/call-boom", ["total"], methods=["PUT"])
app.route("/sleep", sleepy, timeout=0.5)
app.route("/context-count", context_count)
app.route("/stuck", stuck, timeout=0.3)
app.route("/grow", grow >> upper, methods=["POST"])


@app.function()
async def crash(ctx: Context) -> None:
    import os

    os._exit(3)  # a worker dying mid-request: the supervisor must answer 502 and restart it


@app.function()
async def crash_caller(ctx: Context) -> str:
    await ctx.call("crash")
    return "unreachable"


app.route("/crash", crash)
app.route("/call-crash", crash_caller)


@app.function()
async def status_of(ctx: Context) -> dict:
    """Answers with the status the path names, and a body (which 1xx/204/304 must not carry)."""
    ctx.status = ctx.params["code"]
    return {"ok": True}


@app.function()
async def first(ctx: Context) -> str:
    """Labels its own body HTML; sets headers the chain's later hop keeps, replaces or adds to."""
    ctx.content_type = "text/html"
    ctx.set_header("X-First", "1")
    ctx.set_header("X-Shared", "first")
    ctx.set_header("Set-Cookie", "a=1")
    return "<p>first</p>"


@app.function()
async def second(ctx: Context) -> dict:
    if ctx.query.get("headers"):
        ctx.set_header("x-shared", "second")
        ctx.set_header("Set-Cookie", "b=2")
    return {"second": True}


@app.function()
async def typed(ctx: Context) -> str:
    ctx.set_header("Content-Type", "text/csv")  # the one content type, not a second header
    return "a,b\n"


@app.function()
async def smuggle(ctx: Context) -> str:
    ctx.set_header("Content-Length", "999")  # the server's to write: a ValueError, so a 500
    return "x" * 10


app.route("/status/{code:int}", status_of)
app.route("/smuggle", smuggle)
app.route("/headers", first >> second)
app.route("/typed", typed)
