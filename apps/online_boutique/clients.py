"""Calls the frontend and checkout make to the other services, one helper per upstream RPC.

Each helper is one ``ctx.call`` (or a few), so the handlers read like upstream's and can
``asyncio.gather`` the independent ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from apps.online_boutique.data import FRONTEND_CURRENCIES
from apps.online_boutique.money import Money
from spright import CallError, Context

log = logging.getLogger("online_boutique")
MAX_SHOWN_RECOMMENDATIONS = 4  # the frontend shows four of the service's five


async def convert(ctx: Context, amount: Money | dict[str, Any], to_code: str) -> Money:
    body = amount.to_dict() if isinstance(amount, Money) else amount
    reply = await ctx.call("currency", {"op": "convert", "from": body, "to_code": to_code})
    return Money.from_dict(reply.json())


async def supported_currencies(ctx: Context) -> list[str]:
    """The currencies the frontend offers: the service's, filtered by upstream's whitelist."""
    codes = set((await ctx.call("currency", {"op": "supported"})).json()["currency_codes"])
    return [code for code in FRONTEND_CURRENCIES if code in codes]


async def get_product(ctx: Context, product_id: str) -> dict[str, Any]:
    return (await ctx.call("productcatalog", {"op": "get", "id": product_id})).json()


async def list_products(ctx: Context) -> list[dict[str, Any]]:
    return (await ctx.call("productcatalog", {"op": "list"})).json()["products"]


async def get_cart(ctx: Context, user_id: str) -> list[dict[str, Any]]:
    return (await ctx.call("cart", {"op": "get", "user_id": user_id})).json()["items"]


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


async def choose_ad(ctx: Context, context_keys: list[str]) -> dict[str, str] | None:
    """One ad for the page; an ad service failure costs the ad, never the page (upstream)."""
    try:
        ads = (await ctx.call("ad", {"context_keys": context_keys})).json()["ads"]
    except CallError as exc:
        log.warning("ad service failed: %s", exc)
        return None
    return random.choice(ads) if ads else None
