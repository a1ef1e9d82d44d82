"""cart: AddItem, GetCart, EmptyCart per user session, kept in memory.

Why a plain dict is correct under concurrency: the cart function runs in ONE worker process
with ONE asyncio loop, and each operation below runs to completion without awaiting, so no
two requests ever interleave inside a read-modify-write. (Upstream keeps carts in Redis for
the same reason; several cart instances would need that kind of shared store again.)
State lives as long as the worker: a restarted cart worker starts with empty carts.
"""

from __future__ import annotations

from typing import Any

from apps.online_boutique.rpc import field, request, unknown_op
from spright import Context, HTTPError

MAX_QUANTITY = 1_000_000  # per product line; beyond this a request is surely a mistake
CARTS: dict[str, dict[str, int]] = {}  # user id -> product id -> quantity (insertion ordered)


def cart_view(user_id: str) -> dict[str, Any]:
    items = CARTS.get(user_id, {})
    return {"user_id": user_id, "items": [{"product_id": p, "quantity": q} for p, q in items.items()]}


async def cart(ctx: Context) -> dict[str, Any]:
    """``{"op": "add", "user_id", "product_id", "quantity"}``, ``{"op": "get"|"empty", "user_id"}``."""
    payload = request(ctx)
    op = payload.get("op")
    user_id = field(payload, "user_id", str)
    if op == "get":
        return cart_view(user_id)
    if op == "add":
        product_id = field(payload, "product_id", str)
        quantity = field(payload, "quantity", int)
        if quantity < 1:
            raise HTTPError(400, f"quantity must be at least 1, got {quantity}")
        items = CARTS.setdefault(user_id, {})
        updated = items.get(product_id, 0) + quantity
        if updated > MAX_QUANTITY:
            raise HTTPError(400, f"at most {MAX_QUANTITY} of one product per cart")
        items[product_id] = updated
        return cart_view(user_id)
    if op == "empty":
        CARTS.pop(user_id, None)
        return cart_view(user_id)
    raise unknown_op("cart", payload)
