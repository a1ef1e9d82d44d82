"""A node that admits two requests at a time (``Config.max_in_flight=2``, one gateway process,
so the bound is the node's): ``/hold`` answers once the file ``?until=`` names exists, so a test
holds the bound full for as long as it likes without timing anything."""

import asyncio
import os

from spright import App, Config, Context

app = App("overload", config=Config(max_in_flight=2, gateways=1))


@app.function()
async def hold(ctx: Context) -> bytes:
    while not os.path.exists(ctx.query["until"]):
        await asyncio.sleep(0.01)
    return b"held"


@app.function()
async def echo(ctx: Context) -> memoryview:
    return ctx.body


app.route("/hold", "hold", methods=["GET"])
app.route("/echo", "echo", methods=["POST"])
