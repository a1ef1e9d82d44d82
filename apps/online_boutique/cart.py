"""cart: AddItem, GetCart, EmptyCart per user session, in a store that outlives the worker.

Carts live in SQLite by default and in Redis when the node is pointed at one (carts.py), as
upstream keeps them in Redis: a SIGKILLed or restarted cart worker loses no cart.
"""

from __future__ import annotations

from typing import Any

from apps.online_boutique.carts import TooMany, carts
from apps.online_boutique.rpc import field, request, unknown_op
from spright import Context, HTTPError


def cart_view(user_id: str, items: dict[str, int]) -> dict[str, Any]:
    return {"user_id": user_id, "items": [{"product_id": p, "quantity": q} for p, q in items.items()]}


async def cart(ctx: Context) -> dict[str, Any]:
    """``{"op": "add", "user_id", "product_id", "quantity"}``, ``{"op": "get"|"empty", "user_id"}``."""
    payload = request(ctx)
    op = payload.get("op")
    user_id = field(payload, "user_id", str)
    store = carts()
    if op == "get":
        return cart_view(user_id, await store.get(user_id))
    if op == "add":
        product_id = field(payload, "product_id", str)
        quantity = field(payload, "quantity", int)
        if quantity < 1:
            raise HTTPError(400, f"quantity must be at least 1, got {quantity}")
        try:
            return cart_view(user_id, await store.add(user_id, product_id, quantity))
        except TooMany as exc:
            raise HTTPError(400, str(exc)) from None
    if op == "empty":
        await store.empty(user_id)
        return cart_view(user_id, {})
    raise unknown_op("cart", payload)
