"""Two nodes, two apps: ``bank`` serves ``payment`` and exposes it; ``shop`` runs chains and
calls through it, on the node at $BANK_URL."""

import asyncio
import os

from spright import App, Context, HTTPError

bank = App("bank")


@bank.function()
async def payment(ctx: Context) -> dict:
    order = ctx.json()
    if order.get("sleep"):
        await asyncio.sleep(order["sleep"])
    if order.get("decline"):
        raise HTTPError(402, "card declined")
    ctx.set_header("x-receipt", f"r{order['amount']}")  # reaches the client of the other node's chain
    return {**order, "charged": order["amount"], "session": ctx.cookies.get("session")}


bank.expose(payment)

shop = App("shop")


@shop.function()
async def prepare(ctx: Context) -> dict:
    return {**ctx.json(), "prepared": True}


@shop.function()
async def finish(ctx: Context) -> dict:
    return {**ctx.json(), "finished": True}


@shop.function()
async def asker(ctx: Context) -> dict:
    return {"asked": (await ctx.call("payment", ctx.json())).json()}


shop.remote("payment", os.environ.get("BANK_URL", "http://127.0.0.1:9"))
shop.route("/checkout", prepare >> "payment" >> finish, methods=["POST"], timeout=2)
shop.route("/ask", asker, methods=["POST"], timeout=2)
