"""recommendation: ListRecommendations — up to five catalog products that are not in the cart."""

from __future__ import annotations

import functools
import random
from typing import Any

import orjson

from apps.online_boutique.rpc import field, request
from spright import Context

MAX_RECOMMENDATIONS = 5


@functools.lru_cache(maxsize=4)
def catalog_ids(listing: bytes) -> tuple[str, ...]:
    """The product ids of a ListProducts answer, decoded once per distinct catalog: the
    answer is the same bytes call after call, and only the ids are needed here."""
    return tuple(product["id"] for product in orjson.loads(listing)["products"])


async def recommendation(ctx: Context) -> dict[str, Any]:
    """``{"user_id", "product_ids": [...]}`` → ``{"product_ids": [...]}``, random order like upstream.

    Asks productcatalog for the catalog on every call (upstream's chain), so a catalog change
    shows up at once.
    """
    payload = request(ctx)
    exclude = set(field(payload, "product_ids", list))
    listing = await ctx.call("productcatalog", {"op": "list"})
    candidates = [product_id for product_id in catalog_ids(listing.body) if product_id not in exclude]
    picked = random.sample(candidates, min(MAX_RECOMMENDATIONS, len(candidates)))
    return {"product_ids": picked}
