"""POST /echo: the body passes through three functions, each reading it in place.

    spright run examples.echo
    curl -d 'hello' http://127.0.0.1:8080/echo
"""

from spright import App, Context

app = App("echo")


@app.function()
async def parse(ctx: Context) -> memoryview:
    return ctx.body  # the payload itself: no copy, the next hop reads the same bytes


@app.function()
async def enrich(ctx: Context) -> memoryview:
    return ctx.body


@app.function()
async def reply(ctx: Context) -> memoryview:
    return ctx.body


app.route("/echo", parse >> enrich >> reply, methods=["POST"])
