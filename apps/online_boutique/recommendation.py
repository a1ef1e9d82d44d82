"""recommendation: ListRecommendations — up to five catalog products that are not in the cart."""

from __future__ import annotations

import random
from typing import Any

from apps.online_boutique.rpc import field, request
from spright import Context

MAX_RECOMMENDATIONS = 5


async def recommendation(ctx: Context) -> dict[str, Any]:
    """``{"user_id", "product_ids": [...]}`` → ``{"product_ids": [...]}``, random order like upstream.

    Asks productcatalog for the catalog on every call (upstream's chain), so a catalog change
    shows up at once.
    """
    payload = request(ctx)
    exclude = set(field(payload, "product_ids", list))
    catalog = (await ctx.call("productcatalog", {"op": "list"})).json()["products"]
    candidates = [p["id"] for p in catalog if p["id"] not in exclude]
    picked = random.sample(candidates, min(MAX_RECOMMENDATIONS, len(candidates)))
    return {"product_ids": picked}
