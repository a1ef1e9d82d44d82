"""An echo node with a short request timeout, a short grace for late writers and the default
pool's shape in miniature (few large slots), for the slow-client, fault and fence tests."""

import asyncio

from spright import App, Config, Context
from spright.data.config import PoolConfig
from spright.worker.context import descriptor_of

app = App("slow", config=Config(request_timeout=1.0, max_connections=600, grace=0.5,
                                pool=PoolConfig(classes=((4096, 256), (65536, 64), (1 << 20, 8)), large_slots=2)))


@app.function()
async def echo(ctx: Context) -> memoryview:
    return ctx.body


app.route("/echo", "echo", methods=["POST"])


@app.function()
async def dawdle(ctx: Context) -> bytes:
    """Takes half a second: a request in flight long enough for its client to leave."""
    await asyncio.sleep(0.5)
    return b"done"


app.route("/dawdle", "dawdle", methods=["GET", "POST"])


class Stubborn:
    """What the stubborn handler did, for the test that runs it in process."""

    slots: list[tuple[int, int]] = []  # (slot, generation) of each run
    late_writes = 0  # writes into its slot after its cancellation


@app.function()
async def stubborn(ctx: Context) -> bytes:
    """A hung handler that ignores its cancellation and keeps writing into its request's slot
    for ``?for=`` seconds: the late writer the pool's holds fence off."""
    loop = asyncio.get_running_loop()
    d = descriptor_of(ctx)
    Stubborn.slots.append((d.slot, d.generation))
    until, cancelled = loop.time() + float(ctx.query.get("for", "2")), False
    while loop.time() < until:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled = True
        if cancelled:
            written = min(6, len(ctx.body))
            ctx.body[:written] = b"LATE!!"[:written]
            Stubborn.late_writes += 1
    return b"finally"


app.route("/stubborn", "stubborn", methods=["POST"], timeout=0.3)
