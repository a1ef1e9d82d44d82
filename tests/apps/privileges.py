"""Workers that report whom they run as, and a hostile one that tries what root could do:
``probe`` opens the file and signals the process it is told of, and says what each met;
``first >> second`` is a chain; ``caller`` reaches ``probe`` through ``ctx.call``."""

import os

from spright import App, Context

app = App("privileges")


def _ids() -> dict:
    return {"pid": os.getpid(), "uids": list(os.getresuid()), "gids": list(os.getresgid())}


@app.function(max_instances=2)
async def probe(ctx: Context) -> dict:
    met = _ids()
    told = ctx.json() if ctx.body else {}
    if "path" in told:
        try:
            with open(told["path"], "rb") as opened:
                met["open"] = opened.read().decode()
        except OSError as exc:
            met["open"] = type(exc).__name__
    if "kill" in told:
        try:
            os.kill(told["kill"], 0)
            met["kill"] = "signalled"
        except OSError as exc:
            met["kill"] = type(exc).__name__
    return met


@app.function
async def first(ctx: Context) -> bytes:
    return bytes(ctx.body) + b"1"


@app.function
async def second(ctx: Context) -> bytes:
    return bytes(ctx.body) + b"2"


@app.function
async def caller(ctx: Context) -> dict:
    return {"caller": _ids(), "probe": (await ctx.call("probe", {})).json()}


app.route("/probe", probe, methods=["POST"])
app.route("/chain", first >> second, methods=["POST"])
app.route("/call", caller)
