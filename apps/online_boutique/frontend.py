"""frontend: Online Boutique's web frontend, one spright function behind every shop route.

Same HTTP interface as upstream (paths, form fields, cookies, 302 redirects). Each page
calls the services in upstream's order and gathers the calls that do not depend on each
other. Errors become a page (or JSON) with the right status; the session survives them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from apps.online_boutique import clients as rpc
from apps.online_boutique.data import FRONTEND_CURRENCIES
from apps.online_boutique.money import Money, total
from apps.online_boutique.web import CURRENCY_COOKIE, SESSION_COOKIE, Visit, local_referer
from spright import Context, HTTPError

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".ico": "image/x-icon"}
MAX_QUANTITY = 10  # the product page offers 1..10, as upstream's validator allows
ADDRESS_FIELDS = ("street_address", "zip_code", "city", "state", "country")
CARD_FIELDS = ("credit_card_number", "credit_card_expiration_month", "credit_card_expiration_year",
               "credit_card_cvv")
Page = dict[str, Any] | str
_static_cache: dict[str, bytes] = {}


def cart_size(items: list[dict[str, Any]]) -> int:
    return sum(int(item["quantity"]) for item in items)


async def home(v: Visit) -> Page:
    ctx = v.ctx
    currencies, products, items, ad = await asyncio.gather(
        rpc.supported_currencies(ctx), rpc.list_products(ctx), rpc.get_cart(ctx, v.session_id), rpc.choose_ad(ctx, [])
    )
    prices = await asyncio.gather(*(rpc.convert(ctx, p["price_usd"], v.currency) for p in products))
    shown = [{"item": p, "price": price.to_dict()} for p, price in zip(products, prices, strict=True)]
    return v.page("home.html", currencies=currencies, products=shown, cart_size=cart_size(items), ad=ad)


async def product(v: Visit) -> Page:
    ctx = v.ctx
    item = await rpc.get_product(ctx, ctx.params["id"])  # unknown: the catalog's 404 becomes ours
    currencies, items, price, recommended, ad = await asyncio.gather(
        rpc.supported_currencies(ctx), rpc.get_cart(ctx, v.session_id), rpc.convert(ctx, item["price_usd"], v.currency),
        rpc.recommendations(ctx, v.session_id, [item["id"]]), rpc.choose_ad(ctx, item["categories"]),
    )
    return v.page("product.html", currencies=currencies, product={"item": item, "price": price.to_dict()},
                  cart_size=cart_size(items), recommendations=recommended, ad=ad)


def quantity_of(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_QUANTITY:
        raise HTTPError(400, f"invalid quantity {text!r}: choose a whole number from 1 to {MAX_QUANTITY}")
    return int(text)


async def add_to_cart(v: Visit) -> Page:
    form = v.ctx.form()
    quantity = quantity_of(form.get("quantity", ""))
    product_id = form.get("product_id", "")
    if not product_id:
        raise HTTPError(400, "invalid form input: product_id is required")
    await rpc.get_product(v.ctx, product_id)  # 404 for an unknown product, before the cart changes
    await v.ctx.call("cart", {"op": "add", "user_id": v.session_id, "product_id": product_id, "quantity": quantity})
    return v.redirect("/cart")


async def view_cart(v: Visit) -> Page:
    ctx = v.ctx
    currencies, items = await asyncio.gather(rpc.supported_currencies(ctx), rpc.get_cart(ctx, v.session_id))
    recommended, shipping_cost, *lines = await asyncio.gather(
        rpc.recommendations(ctx, v.session_id, [item["product_id"] for item in items]),
        rpc.quote_shipping(ctx, None, items, v.currency),
        *(rpc.price_item(ctx, item, v.currency) for item in items),
    )
    rows = []
    for line in lines:
        subtotal = Money.from_dict(line["cost"]) * line["item"]["quantity"]
        rows.append({"item": line["product"], "quantity": line["item"]["quantity"], "price": subtotal.to_dict()})
    total_price = total((Money.from_dict(row["price"]) for row in rows), v.currency) + shipping_cost
    return v.page("cart.html", currencies=currencies, cart_size=cart_size(items), items=rows,
                  recommendations=recommended, shipping_cost=shipping_cost.to_dict(),
                  total_cost=total_price.to_dict())


def order_form(form: dict[str, str]) -> dict[str, Any]:
    """Upstream's PlaceOrder form, checked field by field (400 names the bad field)."""
    missing = [name for name in ("email", *ADDRESS_FIELDS, *CARD_FIELDS) if not form.get(name, "").strip()]
    if missing:
        raise HTTPError(400, f"invalid form input: {', '.join(missing)} required")
    if "@" not in form["email"]:
        raise HTTPError(400, "invalid form input: email must be an email address")
    for name in ("zip_code", *CARD_FIELDS[1:]):
        if not form[name].strip().isdigit():
            raise HTTPError(400, f"invalid form input: {name} must be a number")
    card = {name: form[name].strip() for name in CARD_FIELDS}
    for name in CARD_FIELDS[1:]:
        card[name] = int(card[name])
    return {"email": form["email"].strip(), "address": {name: form[name].strip() for name in ADDRESS_FIELDS},
            "credit_card": card}


async def place_order(v: Visit) -> Page:
    ctx = v.ctx
    order_request = order_form(ctx.form())
    order = (await ctx.call("checkout", {"user_id": v.session_id, "user_currency": v.currency, **order_request})).json()
    currencies, recommended = await asyncio.gather(
        rpc.supported_currencies(ctx), rpc.recommendations(ctx, v.session_id, [])
    )
    return v.page("order.html", currencies=currencies, cart_size=0, order=order, total_paid=order["total_paid"],
                  recommendations=recommended)


async def empty_cart(v: Visit) -> Page:
    await v.ctx.call("cart", {"op": "empty", "user_id": v.session_id})
    return v.redirect("/")


async def set_currency(v: Visit) -> Page:
    code = v.ctx.form().get("currency_code", "")
    if code not in FRONTEND_CURRENCIES:
        raise HTTPError(400, f"unsupported currency {code!r}: choose one of {', '.join(FRONTEND_CURRENCIES)}")
    v.set_cookie(CURRENCY_COOKIE, code)
    return v.redirect(local_referer(v.ctx.headers.get("referer", "")))


async def logout(v: Visit) -> Page:
    for name in (SESSION_COOKIE, CURRENCY_COOKIE):
        v.set_cookie(name, "", max_age=0)
    return v.redirect("/")


async def healthz(v: Visit) -> Page:
    v.ctx.content_type = "text/plain; charset=utf-8"
    return "ok"


def static(ctx: Context) -> bytes:
    """The shop's CSS and product pictures, from package data, cached in memory after first use."""
    name = ctx.params.get("path", "")
    file = (STATIC / name).resolve()
    if file.suffix not in STATIC_TYPES or not file.is_relative_to(STATIC.resolve()) or not file.is_file():
        raise HTTPError(404, f"no static file {name!r}")
    if name not in _static_cache:
        _static_cache[name] = file.read_bytes()
    ctx.content_type = STATIC_TYPES[file.suffix]
    ctx.set_header("cache-control", "public, max-age=86400")
    return _static_cache[name]


PAGES: dict[tuple[str, str], Callable[[Visit], Awaitable[Page]]] = {
    ("GET", "/"): home,
    ("POST", "/setCurrency"): set_currency,
    ("POST", "/cart"): add_to_cart,
    ("GET", "/cart"): view_cart,
    ("POST", "/cart/checkout"): place_order,
    ("POST", "/cart/empty"): empty_cart,
    ("GET", "/logout"): logout,
    ("GET", "/_healthz"): healthz,
}
NO_SESSION = {logout, healthz}


async def frontend(ctx: Context) -> Page | bytes:
    """Dispatch on method and path (the gateway already matched the route), answer errors as pages."""
    if "path" in ctx.params:
        return static(ctx)
    handler = product if "id" in ctx.params else PAGES.get((ctx.method, ctx.path))
    if handler is None:  # a route of the app's table this dispatcher does not know: a bug, say so
        raise HTTPError(404, f"no page for {ctx.method} {ctx.path}")
    visit = Visit(ctx, session=handler not in NO_SESSION)
    try:
        return await handler(visit)
    except HTTPError as exc:  # includes CallError: a service's 4xx reaches the shopper with its message
        return visit.error(exc.status, exc.detail)
