"""What a worker inherits from the node's template: ``fn`` answers its pid and parent's, a fresh
``random.random()`` and a trace span id (both must differ per worker), and what this module
computed when it was imported (the pid that imported it: the template's, when workers fork)."""

import os
import random

from spright import App, Context
from spright.data.tracecontext import new_span_id

IMPORTED_BY = os.getpid()
IMPORTED_TOKEN = random.random()

app = App("warm")


@app.function()
async def fn(ctx: Context) -> dict:
    return {"pid": os.getpid(), "parent": os.getppid(), "random": random.random(), "span": new_span_id(),
            "imported_by": IMPORTED_BY, "token": IMPORTED_TOKEN}


app.route("/fn", fn)
