"""An app that starts a thread at import: not safe to fork from, so its node spawns its workers."""

import os
import threading

from spright import App, Context

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="refresher", daemon=True).start()

app = App("threaded")


@app.function()
async def fn(ctx: Context) -> dict:
    return {"pid": os.getpid(), "parent": os.getppid()}


app.route("/fn", fn)
