"""The Online Boutique tests' kit: shoppers (one cookie jar each, over TestClient or real HTTP,
speaking one small interface) and the shop's scenarios, so that one scenario runs in-process,
against a node (test_online_boutique) and against a pod (test_pod)."""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import orjson

from apps.online_boutique.data import EUR_RATES, PRODUCTS
from apps.online_boutique.money import Money
from spright.testing import TestClient

JSON = {"accept": "application/json"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies: list[str]  # raw set-cookie values

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class InProcessShopper:
    """A browser-like session over ``TestClient``: keeps the cookies the shop sets."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.jar: dict[str, str] = {}

    async def request(self, method: str, path: str, *, data: dict[str, Any] | None = None,
                      json: bool = False, headers: dict[str, str] | None = None) -> Answer:
        sent = {**(JSON if json else {}), **(headers or {})}
        if self.jar:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        form = {k: str(v) for k, v in data.items()} if data is not None else None
        r = await self.client.request(method, path, data=form, headers=sent)
        cookies = r.headers.getlist("set-cookie")
        for raw in cookies:
            for name, morsel in SimpleCookie(raw).items():
                if morsel["max-age"] == "0":
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value
        headers_out = dict(r.headers)
        return Answer(r.status, headers_out, r.body, cookies)


class HttpShopper:
    """The same over real HTTP (aiohttp, its own cookie jar and connection)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    @property
    def jar(self) -> dict[str, str]:
        return {c.key: c.value for c in self.session.cookie_jar}

    async def request(self, method: str, path: str, *, data: dict[str, Any] | None = None,
                      json: bool = False, headers: dict[str, str] | None = None) -> Answer:
        sent = {**(JSON if json else {}), **(headers or {})}
        form = {k: str(v) for k, v in data.items()} if data is not None else None
        async with self.session.request(method, self.url + path, data=form, headers=sent,
                                        allow_redirects=False) as r:
            body = await r.read()
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, body,
                          r.headers.getall("set-cookie", []))

    async def close(self) -> None:
        await self.session.close()


Shopper = InProcessShopper | HttpShopper

IDS = [p["id"] for p in PRODUCTS]
NEXT_YEAR = datetime.date.today().year + 1
ORDER_FORM = {
    "email": "someone@example.com", "street_address": "1600 Amphitheatre Parkway", "zip_code": "94043",
    "city": "Mountain View", "state": "CA", "country": "United States",
    "credit_card_number": "4432-8015-6152-0454", "credit_card_expiration_month": "1",
    "credit_card_expiration_year": str(NEXT_YEAR), "credit_card_cvv": "672",
}
USD = {p["id"]: Money.from_dict(p["price_usd"]) for p in PRODUCTS}


# -- the shop, scenario by scenario (shared by TestClient and the real node) --------------------------
async def scenario_browse(shopper: Shopper) -> None:
    home = await shopper.request("GET", "/")
    assert home.status == 200 and home.headers["content-type"].startswith("text/html")
    assert any(c.startswith("shop_session-id=") for c in home.cookies)
    assert all(pid in home.text for pid in IDS) and "Spright Boutique" in home.text
    session = shopper.jar["shop_session-id"]
    data = (await shopper.request("GET", "/", json=True)).json()
    assert data["session_id"] == session and data["user_currency"] == "USD" and data["cart_size"] == 0
    assert [p["item"]["id"] for p in data["products"]] == IDS
    assert data["currencies"] == ["USD", "EUR", "CAD", "JPY", "GBP", "TRY"]
    assert data["products"][0]["price"] == PRODUCTS[0]["price_usd"]

    page = await shopper.request("GET", "/product/L9ECAV7KIM")
    assert page.status == 200 and "Suede Loafers" in page.text and 'name="quantity"' in page.text
    product = (await shopper.request("GET", "/product/L9ECAV7KIM", json=True)).json()
    assert product["product"]["item"]["id"] == "L9ECAV7KIM"
    recommended = [p["id"] for p in product["recommendations"]]
    assert len(recommended) == 4 and "L9ECAV7KIM" not in recommended
    assert product["ad"]["redirect_url"] == "/product/L9ECAV7KIM"  # footwear ads

    moved = await shopper.request("POST", "/setCurrency", data={"currency_code": "EUR"},
                                  headers={"referer": "http://127.0.0.1/product/L9ECAV7KIM"})
    assert moved.status == 302 and moved.headers["location"] == "/product/L9ECAV7KIM"
    assert shopper.jar["shop_currency"] == "EUR"
    euro = (await shopper.request("GET", "/product/L9ECAV7KIM", json=True)).json()["product"]["price"]
    assert Money.from_dict(euro) == USD["L9ECAV7KIM"].convert("EUR", EUR_RATES)
    assert (await shopper.request("POST", "/setCurrency", data={"currency_code": "XYZ"})).status == 400
    assert (await shopper.request("POST", "/setCurrency", data={"currency_code": "USD"})).headers["location"] == "/"
    assert shopper.jar["shop_session-id"] == session


async def scenario_cart_and_checkout(shopper: Shopper) -> None:
    await shopper.request("GET", "/")
    added = await shopper.request("POST", "/cart", data={"product_id": "OLJCESPC7Z", "quantity": 3})
    assert added.status == 302 and added.headers["location"] == "/cart"
    await shopper.request("POST", "/cart", data={"product_id": "6E92ZMYYFZ", "quantity": 10})
    await shopper.request("POST", "/cart", data={"product_id": "OLJCESPC7Z", "quantity": 1})
    cart = (await shopper.request("GET", "/cart", json=True)).json()
    assert cart["cart_size"] == 14 and [(r["item"]["id"], r["quantity"]) for r in cart["items"]] == [
        ("OLJCESPC7Z", 4), ("6E92ZMYYFZ", 10)]
    expected = USD["OLJCESPC7Z"] * 4 + USD["6E92ZMYYFZ"] * 10 + Money.parse("USD", "8.99")
    assert Money.from_dict(cart["total_cost"]) == expected == Money.parse("USD", "178.85")
    page = await shopper.request("GET", "/cart")
    assert page.status == 200 and "$178.85" in page.text and 'action="/cart/checkout"' in page.text

    order_page = await shopper.request("POST", "/cart/checkout", data=ORDER_FORM)
    assert order_page.status == 200 and "Your order is complete" in order_page.text and "$178.85" in order_page.text
    assert (await shopper.request("GET", "/cart", json=True)).json()["items"] == []

    await shopper.request("POST", "/setCurrency", data={"currency_code": "JPY"})
    await shopper.request("POST", "/cart", data={"product_id": "1YMWWN1N4O", "quantity": 2})
    order = (await shopper.request("POST", "/cart/checkout", data=ORDER_FORM, json=True)).json()["order"]
    assert re.fullmatch(r"[A-Z]{2}-\d+-\d+", order["shipping_tracking_id"]) and order["order_id"]
    item_jpy = USD["1YMWWN1N4O"].convert("JPY", EUR_RATES)
    shipping_jpy = Money.parse("USD", "8.99").convert("JPY", EUR_RATES)
    assert Money.from_dict(order["total_paid"]) == item_jpy * 2 + shipping_jpy
    assert order["items"] == [{"item": {"product_id": "1YMWWN1N4O", "quantity": 2}, "name": "Field Watch",
                               "cost": item_jpy.to_dict()}]

    await shopper.request("POST", "/cart", data={"product_id": "9SIQT8TOJO", "quantity": 1})
    emptied = await shopper.request("POST", "/cart/empty")
    assert emptied.status == 302 and emptied.headers["location"] == "/"
    assert (await shopper.request("GET", "/cart", json=True)).json()["cart_size"] == 0
    assert "Your shopping cart is empty" in (await shopper.request("GET", "/cart")).text

    out = await shopper.request("GET", "/logout")
    assert out.status == 302 and out.headers["location"] == "/"
    assert sorted(c.split("=")[0] for c in out.cookies if "Max-Age=0" in c) == ["shop_currency", "shop_session-id"]


async def scenario_errors(shopper: Shopper) -> None:
    await shopper.request("GET", "/")
    session = shopper.jar["shop_session-id"]
    missing = await shopper.request("GET", "/product/NOSUCHTHING")
    assert missing.status == 404 and "NOSUCHTHING" in missing.text and missing.headers["content-type"].startswith(
        "text/html")
    assert (await shopper.request("GET", "/product/NOSUCHTHING", json=True)).json() == {
        "error": "no product with id 'NOSUCHTHING'", "status": 404}
    for quantity in ("0", "11", "abc", "", "-1", "2.5"):
        r = await shopper.request("POST", "/cart", data={"product_id": "OLJCESPC7Z", "quantity": quantity})
        assert r.status == 400 and "quantity" in r.text, quantity
    assert (await shopper.request("POST", "/cart", data={"product_id": "NOPE", "quantity": 1})).status == 404
    assert (await shopper.request("POST", "/cart/checkout", data=ORDER_FORM)).status == 400  # empty cart
    await shopper.request("POST", "/cart", data={"product_id": "2ZYFJ3GM2N", "quantity": 1})
    for card, message in (("4432-8015-6152-0455", "Credit card info is invalid"),
                          ("378282246310005", "Only VISA or MasterCard is accepted")):
        r = await shopper.request("POST", "/cart/checkout", data={**ORDER_FORM, "credit_card_number": card}, json=True)
        assert r.status == 400 and message in r.json()["error"], r.json()
    expired = await shopper.request("POST", "/cart/checkout",
                                    data={**ORDER_FORM, "credit_card_expiration_year": str(NEXT_YEAR - 3)})
    assert expired.status == 400 and "expired on 1/" in expired.text
    r = await shopper.request("POST", "/cart/checkout", data={**ORDER_FORM, "zip_code": ""}, json=True)
    assert r.status == 400 and "zip_code" in r.json()["error"]
    cart = (await shopper.request("GET", "/cart", json=True)).json()
    assert shopper.jar["shop_session-id"] == session and cart["session_id"] == session
    lines = [(r["item"]["id"], r["quantity"]) for r in cart["items"]]
    assert lines == [("2ZYFJ3GM2N", 1)], "a failed order keeps the cart"
    mastercard = {**ORDER_FORM, "credit_card_number": "5555 5555 5555 4444"}
    assert (await shopper.request("POST", "/cart/checkout", data=mastercard)).status == 200
    assert (await shopper.request("GET", "/static/style.css")).headers["content-type"].startswith("text/css")
    assert (await shopper.request("GET", f"/static/img/{IDS[0]}.svg")).body.startswith(b"<svg")
    assert (await shopper.request("GET", "/static/../__init__.py")).status == 404
    assert (await shopper.request("DELETE", "/cart")).status == 405


async def concurrent_carts(make_shopper: Callable[[], Shopper], users: int = 50) -> None:
    """Many sessions add different products at once; every cart holds exactly its own lines."""
    shoppers = [make_shopper() for _ in range(users)]
    await asyncio.gather(*(s.request("GET", "/") for s in shoppers))

    async def shop(index: int, shopper: Shopper) -> None:
        for round_ in range(3):
            pid = IDS[(index + round_) % len(IDS)]
            r = await shopper.request("POST", "/cart", data={"product_id": pid, "quantity": 1 + index % 5})
            assert r.status == 302

    await asyncio.gather(*(shop(i, s) for i, s in enumerate(shoppers)))
    carts = await asyncio.gather(*(s.request("GET", "/cart", json=True) for s in shoppers))
    assert len({s.jar["shop_session-id"] for s in shoppers}) == users
    for index, answer in enumerate(carts):
        lines = {row["item"]["id"]: row["quantity"] for row in answer.json()["items"]}
        assert lines == {IDS[(index + r) % len(IDS)]: 1 + index % 5 for r in range(3)}, index


async def on_node(url: str, scenario: Callable[[Shopper], Awaitable[None]]) -> None:
    shopper = HttpShopper(url)
    try:
        await scenario(shopper)
    finally:
        await shopper.close()
