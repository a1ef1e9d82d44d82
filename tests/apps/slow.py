"""An echo node with a short request timeout and the default pool's shape in miniature (few
large slots), for the slow-client tests (tests/test_slow_clients.py)."""

import asyncio

from spright import App, Config, Context
from spright.config import PoolConfig

app = App("slow", config=Config(request_timeout=1.0, max_connections=600,
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
