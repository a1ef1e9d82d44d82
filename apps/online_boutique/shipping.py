"""shipping: GetQuote from the item count, ShipOrder returns a tracking id."""

from __future__ import annotations

import random
import string
from typing import Any

from apps.online_boutique.money import Money
from apps.online_boutique.rpc import field, request, unknown_op
from spright import Context, HTTPError

FLAT_RATE = Money.parse("USD", "8.99")  # upstream's quote: a flat rate once anything ships


def item_count(items: list[Any]) -> int:
    try:
        return sum(int(item["quantity"]) for item in items)
    except (KeyError, TypeError, ValueError):
        raise HTTPError(400, "items must be objects with a quantity") from None


def quote(count: int) -> Money:
    """Free for an empty order, the flat rate otherwise (upstream's CreateQuoteFromCount)."""
    return Money("USD", 0, 0) if count == 0 else FLAT_RATE


def tracking_id(address: dict[str, Any]) -> str:
    """Upstream's shape: two letters, then digits salted with the address's length."""
    salt = len(" ".join(str(v) for v in address.values()))
    letters = "".join(random.choices(string.ascii_uppercase, k=2))
    first = "".join(random.choices(string.digits, k=3))
    second = "".join(random.choices(string.digits, k=7))
    return f"{letters}-{salt}{first}-{salt // 2}{second}"


async def shipping(ctx: Context) -> dict[str, Any]:
    """``{"op": "quote", "address", "items"}`` → ``{"cost_usd"}``; ``{"op": "ship", ...}`` → ``{"tracking_id"}``."""
    payload = request(ctx)
    op = payload.get("op")
    items = field(payload, "items", list)
    if op == "quote":
        return {"cost_usd": quote(item_count(items)).to_dict()}
    if op == "ship":
        if item_count(items) == 0:
            raise HTTPError(400, "nothing to ship")
        return {"tracking_id": tracking_id(field(payload, "address", dict))}
    raise unknown_op("shipping", payload)
