"""productcatalog: ListProducts, GetProduct, SearchProducts over the shop's own catalog."""

from __future__ import annotations

from typing import Any

import orjson

from apps.online_boutique.data import PRODUCTS, PRODUCTS_BY_ID
from apps.online_boutique.rpc import field, request, unknown_op
from spright import Context, HTTPError, JSONBytes

# the catalog never changes while the node runs: its answers are encoded once
LISTING = JSONBytes(orjson.dumps({"products": PRODUCTS}))
ENCODED = {product_id: JSONBytes(orjson.dumps(product)) for product_id, product in PRODUCTS_BY_ID.items()}


def search(query: str) -> list[dict[str, Any]]:
    """Products whose name or description contains ``query`` (case-insensitive), as upstream."""
    needle = query.lower()
    return [p for p in PRODUCTS if needle in p["name"].lower() or needle in p["description"].lower()]


async def productcatalog(ctx: Context) -> dict[str, Any] | JSONBytes:
    """``{"op": "list"}``, ``{"op": "get", "id"}`` (404 when unknown), ``{"op": "search", "query"}``."""
    payload = request(ctx)
    op = payload.get("op")
    if op == "list":
        return LISTING
    if op == "get":
        product_id = field(payload, "id", str)
        product = ENCODED.get(product_id)
        if product is None:
            raise HTTPError(404, f"no product with id {product_id!r}")
        return product
    if op == "search":
        return {"results": search(field(payload, "query", str))}
    raise unknown_op("productcatalog", payload)
