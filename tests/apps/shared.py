"""Two functions sharing one worker process, a third on its own."""

from spright import App, Context

app = App("shared")


@app.function(process="pair")
async def first(ctx: Context) -> bytes:
    return ctx.bytes() + b"1"


@app.function(process="pair")
async def second(ctx: Context) -> bytes:
    return ctx.bytes() + b"2"


@app.function()
async def alone(ctx: Context) -> bytes:
    return ctx.bytes() + b"3"


app.route("/chain", first >> second >> alone >> first, methods=["POST"])
