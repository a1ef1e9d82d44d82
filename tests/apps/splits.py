"""A function of two instances and a caller that calls it many times from one request: what a
split of ``target``'s live set is measured with (tests/test_splits.py)."""

import asyncio

from spright import App, Context

app = App("splits")
AT_ONCE = 50  # calls in flight at a time: the data plane picks for each


@app.function(instances=2)
async def target(ctx: Context) -> dict:
    return {}


@app.function()
async def caller(ctx: Context) -> dict:
    """Calls ``target`` as many times as its body says."""
    calls = int(ctx.body)
    for start in range(0, calls, AT_ONCE):
        await asyncio.gather(*(ctx.call("target", {}) for _ in range(min(AT_ONCE, calls - start))))
    return {"calls": calls}


app.route("/calls", caller, methods=["POST"], timeout=120)
