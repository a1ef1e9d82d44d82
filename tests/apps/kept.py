"""Handlers whose background tasks keep ``ctx``, ``ctx.body``, a slice of it or a call's
reply after the handler returned: what the worker's fence (spright/worker/fence.py) stops."""

import asyncio
from typing import Any

from spright import App, Context
from spright.worker.context import descriptor_of

app = App("kept")


class Kept:
    """What the background tasks saw, for the tests that run this app in process."""

    go = asyncio.Event()  # the tasks touch what they kept once this is set (a fresh one per test)
    tasks: set["asyncio.Task[None]"] = set()
    outcome: list[Any] = []  # what each task got: the exception, or what it read
    slots: list[tuple[int, int]] = []  # (slot, generation) of each request


def later(touch: Any) -> None:
    async def task() -> None:
        await Kept.go.wait()
        try:
            Kept.outcome.append(touch())
        except Exception as exc:
            Kept.outcome.append(exc)

    started = asyncio.get_running_loop().create_task(task())
    Kept.tasks.add(started)
    started.add_done_callback(Kept.tasks.discard)


def noted(ctx: Context) -> None:
    d = descriptor_of(ctx)
    Kept.slots.append((d.slot, d.generation))


@app.function()
async def read_later(ctx: Context) -> bytes:
    noted(ctx)
    later(lambda: bytes(ctx.body))
    later(ctx.json)
    later(ctx.text)
    later(lambda: ctx.headers)
    return b"ok"


@app.function()
async def write_later(ctx: Context) -> bytes:
    noted(ctx)
    view = ctx.body

    def write() -> bytes:
        view[:4] = b"LATE"
        return b"written"

    later(write)
    later(lambda: bytes(view))
    return b"ok"


@app.function()
async def slice_later(ctx: Context) -> bytes:
    noted(ctx)
    part = ctx.body[:4]

    def write() -> bytes:
        part[:4] = b"LATE"
        return b"written"

    later(write)
    return bytes(ctx.body)  # its answer moves out of the slot the slice keeps


@app.function()
async def call_later(ctx: Context) -> bytes:
    noted(ctx)
    reply = await ctx.call("echo", bytes(ctx.body))
    later(lambda: reply.body)
    later(lambda: reply.json())
    return b"ok"


@app.function()
async def echo(ctx: Context) -> memoryview:
    noted(ctx)
    return ctx.body


@app.function()
async def park(ctx: Context) -> memoryview:
    """Takes the slot a fenced request just left, and answers its body once the tasks ran."""
    noted(ctx)
    await Kept.go.wait()
    await asyncio.sleep(0.05)
    return ctx.body


for name in ("read_later", "write_later", "slice_later", "call_later", "echo", "park"):
    app.route(f"/{name}", name, methods=["POST"])
