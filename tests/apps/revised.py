"""An app whose code the revision tests change while it serves (tests/test_revisions.py copies
this file into a directory of its own and edits VERSION, or breaks it)."""

import asyncio
import collections
import os
from pathlib import Path

from spright import App, Config, Context

VERSION = "v1"
app = App("revised", config=Config(drain_timeout=3))  # a retiring worker holds a request this long at most


@app.function(instances=2)
async def target(ctx: Context) -> dict:
    """Answers with the code's version; with ``?gate=PATH`` it first says it is in the handler
    (PATH.in) and waits until PATH exists."""
    gate = ctx.query.get("gate")
    if gate:
        Path(gate + ".in").touch()
        while not Path(gate).exists():
            await asyncio.sleep(0.01)
    return {"version": VERSION, "pid": os.getpid()}


@app.function()
async def caller(ctx: Context) -> dict:
    """Calls ``target`` as many times as its body says; how many answers came from each version."""
    versions: collections.Counter[str] = collections.Counter()
    calls = int(ctx.body)
    for start in range(0, calls, 50):
        answers = await asyncio.gather(*(ctx.call("target", {}) for _ in range(min(50, calls - start))))
        versions.update(answer.json()["version"] for answer in answers)
    return dict(versions)


@app.function(stateful=True)
async def tally(ctx: Context) -> dict:
    return {"version": VERSION, "pid": os.getpid()}


app.route("/", target)
app.route("/calls", caller, methods=["POST"], timeout=120)
app.route("/tally", tally)
