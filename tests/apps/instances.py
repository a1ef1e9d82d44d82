"""Functions with several instances: ``who`` answers which process (and endpoint) served it;
``asker`` (itself two instances) calls ``who`` and says who asked; ``cart`` is stateful;
``busy`` takes 50 ms and is autoscaled on short windows (one request in flight per instance)."""

import asyncio
import os

from spright import App, Context
from spright.data.autoscale import ScalePolicy

app = App("instances")


@app.function(instances=3, max_instances=4)
async def who(ctx: Context) -> dict:
    return {"pid": os.getpid()}


@app.function(instances=2)
async def asker(ctx: Context) -> dict:
    reply = (await ctx.call("who", {})).json()
    return {"asker": os.getpid(), "who": reply["pid"]}


@app.function(stateful=True)
async def cart(ctx: Context) -> dict:
    return {"pid": os.getpid()}


app.route("/who", who)
app.route("/ask", asker)
app.route("/cart", cart)


@app.function(autoscale=ScalePolicy(target=1, min_instances=1, max_instances=3, stable_window=4, panic_window=2))
async def busy(ctx: Context) -> dict:
    await asyncio.sleep(0.05)
    return {"pid": os.getpid()}


app.route("/busy", busy)


@app.function(instances=2)
async def hold(ctx: Context) -> dict:
    """Holds a request whose body is ``hold`` for two seconds; answers the others at once."""
    if ctx.body == b"hold":
        await asyncio.sleep(2.0)
    return {"pid": os.getpid()}


app.route("/hold", hold, methods=["POST"])


@app.function(autoscale=ScalePolicy(target=1, min_instances=0, max_instances=2, stable_window=2, panic_window=1,
                                    scale_to_zero_grace=1))
async def sleepy(ctx: Context) -> dict:
    """Scales to zero after a second without requests."""
    return {"pid": os.getpid()}


@app.function()
async def wakes(ctx: Context) -> dict:
    """Calls ``sleepy``, which may have no instance: the call waits at the activator."""
    return {"caller": os.getpid(), "callee": (await ctx.call("sleepy", {})).json()["pid"]}


app.route("/sleepy", sleepy)
app.route("/wakes", wakes)


@app.function(instances=2)
async def fragile(ctx: Context) -> dict:
    """``die``: the instance exits half a second into the request, mid-handler."""
    if ctx.body == b"die":
        await asyncio.sleep(0.5)
        os._exit(1)
    return {"pid": os.getpid()}


app.route("/fragile", fragile, methods=["POST"], timeout=10)
