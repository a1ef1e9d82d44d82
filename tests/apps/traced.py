"""A chain of two hops whose first calls a third function: every kind of span (server, hop,
call, the callee's run) in one request. ``GET /fail`` fails in the callee (500). ``sampled``
is the same app tracing every request by its own Config (pod mode: ``spright gateway``)."""

from __future__ import annotations

from spright import App, Config, Context, HTTPError


async def front(ctx: Context) -> dict[str, object]:
    reply = await ctx.call("lookup", {"fail": ctx.path == "/fail"})
    return {"seen": reply.json(), "traceparent": ctx.headers.get("traceparent")}


def back(ctx: Context) -> bytes:
    return bytes(ctx.body)


def lookup(ctx: Context) -> dict[str, object]:
    if ctx.json()["fail"]:
        raise HTTPError(500, "lookup failed, as asked")
    return {"traceparent": ctx.headers.get("traceparent")}


def build(app: App) -> App:
    chain = app.add_function(front, name="front") >> app.add_function(back, name="back")
    app.route("/ok", chain, methods=["GET"])
    app.route("/fail", chain, methods=["GET"])
    app.add_function(lookup, name="lookup")
    return app


app = build(App("traced"))
sampled = build(App("traced", config=Config(trace_sample=1.0)))
