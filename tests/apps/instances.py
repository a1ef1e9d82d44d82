"""Functions with several instances: ``who`` answers which process (and endpoint) served it;
``asker`` (itself two instances) calls ``who`` and says who asked; ``cart`` is stateful."""

import os

from spright import App, Context

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
