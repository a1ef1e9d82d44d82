"""A node for the shutdown and keep-alive tests: ``/nap?s=`` takes that many seconds;
``drain_timeout`` and ``keepalive_timeout`` come from ``$DRAIN_TIMEOUT`` (default 20 s) and
``$KEEPALIVE_TIMEOUT`` (default 15 s)."""

import asyncio
import os

from spright import App, Config, Context

app = App("draining", config=Config(drain_timeout=float(os.environ.get("DRAIN_TIMEOUT", "20")),
                                    keepalive_timeout=float(os.environ.get("KEEPALIVE_TIMEOUT", "15"))))


@app.function(concurrency=256)
async def nap(ctx: Context) -> bytes:
    await asyncio.sleep(float(ctx.query.get("s", "1")))
    return b"napped"


app.route("/nap", nap, timeout=300)
