"""Two security domains: the shop may not call into payments; the gateway reaches both."""

from spright import App, CallError, Context

app = App("domains")


@app.function(domain="payments")
async def charge(ctx: Context) -> dict:
    return {"charged": ctx.json()["amount"]}


@app.function()
async def shop(ctx: Context) -> dict:
    """Calls across the domain boundary: the data plane must refuse it at once."""
    reply = await ctx.call("charge", {"amount": 5})
    return reply.json()


@app.function()
async def careful_shop(ctx: Context) -> dict:
    try:
        await ctx.call("charge", {"amount": 5})
    except CallError as exc:
        return {"refused": exc.status, "detail": exc.detail, "function": exc.function}
    return {"refused": None}


@app.function()
async def item(ctx: Context) -> dict:
    return {name: [type(value).__name__, str(value)] for name, value in ctx.params.items()}


app.route("/charge", charge, methods=["POST"], timeout=20)
app.route("/shop", shop, timeout=20)
app.route("/careful-shop", careful_shop, timeout=20)
app.route("/item/{n:int}/{price:float}/{rest:path}", item)
