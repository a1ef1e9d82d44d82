"""Calls the frontend and checkout make to the other services, one helper per upstream RPC.

Each helper is one ``ctx.call`` (or a few), so the handlers read like upstream's and can
``asyncio.gather`` the independent ones. A one-call helper returns a future (``then``), not
a coroutine: gathering it costs no Task.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any, TypeVar

from apps.online_boutique.data import FRONTEND_CURRENCIES
from apps.online_boutique.money import Money
from spright import CallError, Context, Reply

log = logging.getLogger("online_boutique")
MAX_SHOWN_RECOMMENDATIONS = 4  # the frontend shows four of the service's five
T = TypeVar("T")


def then(call: asyncio.Future[Reply], decode: Callable[[Reply], T],
         on_error: Callable[[CallError], T] | None = None) -> asyncio.Future[T]:
    """A future of ``decode(reply)`` (or of ``on_error(error)`` when the call fails with a
    CallError and ``on_error`` is given): one callback where a coroutine would need a Task."""
    out: asyncio.Future[T] = call.get_loop().create_future()

    def settle(done: asyncio.Future[Reply]) -> None:
        if out.done():  # the waiter gave up
            return
        if done.cancelled():
            out.cancel()
            return
        try:
            out.set_result(decode(done.result()))
        except CallError as exc:
            if on_error is None:
                out.set_exception(exc)
            else:
                out.set_result(on_error(exc))
        except Exception as exc:  # handed to the waiter, as a Task would
            out.set_exception(exc)

    call.add_done_callback(settle)
    return out


def convert(ctx: Context, amount: Money | dict[str, Any], to_code: str) -> asyncio.Future[Money]:
    body = amount.to_dict() if isinstance(amount, Money) else amount
    return then(ctx.call("currency", {"op": "convert", "from": body, "to_code": to_code}),
                lambda reply: Money.from_dict(reply.json()))


def supported_currencies(ctx: Context) -> asyncio.Future[list[str]]:
    """The currencies the frontend offers: the service's, filtered by upstream's whitelist."""
    def offered(reply: Reply) -> list[str]:
        codes = set(reply.json()["currency_codes"])
        return [code for code in FRONTEND_CURRENCIES if code in codes]

    return then(ctx.call("currency", {"op": "supported"}), offered)


def get_product(ctx: Context, product_id: str) -> asyncio.Future[dict[str, Any]]:
    return then(ctx.call("productcatalog", {"op": "get", "id": product_id}), Reply.json)


def list_products(ctx: Context) -> asyncio.Future[list[dict[str, Any]]]:
    return then(ctx.call("productcatalog", {"op": "list"}), lambda reply: reply.json()["products"])


def get_cart(ctx: Context, user_id: str) -> asyncio.Future[list[dict[str, Any]]]:
    return then(ctx.call("cart", {"op": "get", "user_id": user_id}), lambda reply: reply.json()["items"])


async def price_item(ctx: Context, item: dict[str, Any], to_code: str) -> dict[str, Any]:
    """One order line: the product's price in ``to_code`` (GetProduct, then Convert)."""
    product = await get_product(ctx, item["product_id"])
    cost = await convert(ctx, product["price_usd"], to_code)
    return {"item": item, "product": product, "cost": cost.to_dict()}


async def quote_shipping(ctx: Context, address: dict[str, Any] | None, items: list[Any], to_code: str) -> Money:
    quote = await ctx.call("shipping", {"op": "quote", "address": address or {}, "items": items})
    return await convert(ctx, quote.json()["cost_usd"], to_code)


async def recommendations(ctx: Context, user_id: str, product_ids: list[str]) -> list[dict[str, Any]]:
    """Recommended products (ListRecommendations, then GetProduct for each shown one)."""
    reply = await ctx.call("recommendation", {"user_id": user_id, "product_ids": product_ids})
    shown = reply.json()["product_ids"][:MAX_SHOWN_RECOMMENDATIONS]
    return list(await asyncio.gather(*(get_product(ctx, product_id) for product_id in shown)))


def choose_ad(ctx: Context, context_keys: list[str]) -> asyncio.Future[dict[str, str] | None]:
    """One ad for the page; an ad service failure costs the ad, never the page (upstream)."""
    def pick(reply: Reply) -> dict[str, str] | None:
        ads = reply.json()["ads"]
        return random.choice(ads) if ads else None

    def without_ad(exc: CallError) -> None:
        log.warning("ad service failed: %s", exc)

    return then(ctx.call("ad", {"context_keys": context_keys}), pick, without_ad)
