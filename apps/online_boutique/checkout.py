"""checkout: PlaceOrder, orchestrating the other services in upstream's order.

1. cart.get, then (concurrently) for each item productcatalog.get + currency.convert, and
   shipping.quote + currency.convert of the quote;
2. payment.charge of items + shipping (a rejected card stops here: the cart is untouched);
3. shipping.ship → tracking id;
4. cart.empty and email.send concurrently (a failed email is logged, not fatal, as upstream).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from apps.online_boutique.clients import price_item, quote_shipping
from apps.online_boutique.money import Money, total
from apps.online_boutique.rpc import field, request
from spright import CallError, Context, HTTPError

log = logging.getLogger("online_boutique.checkout")


async def checkout(ctx: Context) -> dict[str, Any]:
    """``{"user_id", "user_currency", "address", "email", "credit_card"}`` → the order."""
    payload = request(ctx)
    user_id, to_code = field(payload, "user_id", str), field(payload, "user_currency", str)
    address, email = field(payload, "address", dict), field(payload, "email", str)
    card = field(payload, "credit_card", dict)

    items = (await ctx.call("cart", {"op": "get", "user_id": user_id})).json()["items"]
    if not items:
        raise HTTPError(400, "your cart is empty")
    *lines, shipping_cost = await asyncio.gather(
        *(price_item(ctx, item, to_code) for item in items), quote_shipping(ctx, address, items, to_code)
    )
    amount = total((Money.from_dict(line["cost"]) * line["item"]["quantity"] for line in lines), to_code)
    amount = amount + shipping_cost

    charge = await ctx.call("payment", {"amount": amount.to_dict(), "credit_card": card})
    shipped = await ctx.call("shipping", {"op": "ship", "address": address, "items": items})
    order = {
        "order_id": str(uuid.uuid4()),
        "transaction_id": charge.json()["transaction_id"],
        "shipping_tracking_id": shipped.json()["tracking_id"],
        "shipping_cost": shipping_cost.to_dict(),
        "shipping_address": address,
        "items": [{"item": line["item"], "name": line["product"]["name"], "cost": line["cost"]} for line in lines],
        "total_paid": amount.to_dict(),
    }
    emptied, sent = await asyncio.gather(
        ctx.call("cart", {"op": "empty", "user_id": user_id}),
        ctx.call("email", {"email": email, "order": order}),
        return_exceptions=True,
    )
    if isinstance(emptied, BaseException):
        raise emptied
    if isinstance(sent, CallError):
        log.warning("order %s: confirmation email failed: %s", order["order_id"], sent)
    elif isinstance(sent, BaseException):
        raise sent
    return order
