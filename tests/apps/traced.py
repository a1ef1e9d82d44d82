"""A chain of two hops whose first calls a third function: every kind of span (server, hop,
call, the callee's run) in one request. ``GET /fail`` fails in the callee (500)."""

from __future__ import annotations

from spright import App, Context, HTTPError

app = App("traced")


async def front(ctx: Context) -> dict[str, object]:
    reply = await ctx.call("lookup", {"fail": ctx.path == "/fail"})
    return {"seen": reply.json(), "traceparent": ctx.headers.get("traceparent")}


def back(ctx: Context) -> bytes:
    return bytes(ctx.body)


def lookup(ctx: Context) -> dict[str, object]:
    if ctx.json()["fail"]:
        raise HTTPError(500, "lookup failed, as asked")
    return {"traceparent": ctx.headers.get("traceparent")}


chain = app.add_function(front, name="front") >> app.add_function(back, name="back")
app.route("/ok", chain, methods=["GET"])
app.route("/fail", chain, methods=["GET"])
app.add_function(lookup, name="lookup")
