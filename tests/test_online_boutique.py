"""Online Boutique on spright: money, card checks, every request kind in-process and on a real node."""

from __future__ import annotations

import asyncio
import datetime
import random
import re
from collections.abc import Awaitable, Callable
from fractions import Fraction

import pytest

from apps.online_boutique import app
from apps.online_boutique.ad import ads_for
from apps.online_boutique.data import ADS, EUR_RATES, PRODUCTS
from apps.online_boutique.load import run as run_load
from apps.online_boutique.load import visa_number
from apps.online_boutique.mail import confirmation
from apps.online_boutique.money import Money, MoneyError, total
from apps.online_boutique.payment import CardError, card_type, luhn_valid, validate_card
from apps.online_boutique.shipping import quote, tracking_id
from apps.online_boutique.web import local_referer
from spright.testing import TestClient, run_node
from tests.boutique_clients import HttpShopper, InProcessShopper

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


# -- money ---------------------------------------------------------------------------------------
def test_money_parse_and_carry_of_nanos() -> None:
    assert Money.parse("USD", "19.99") == Money("USD", 19, 990_000_000)
    assert Money.parse("USD", "0.1") + Money.parse("USD", "0.2") == Money.parse("USD", "0.3")
    assert Money("USD", 1, 600_000_000) + Money("USD", 2, 700_000_000) == Money("USD", 4, 300_000_000)
    assert Money.parse("USD", "18.49") * 3 == Money("USD", 55, 470_000_000)
    assert total([], "EUR") == Money("EUR", 0, 0)
    with pytest.raises(MoneyError):
        Money.parse("USD", "0.0000000001")


def test_money_negative_amounts_keep_one_sign() -> None:
    assert Money.parse("USD", "-1.5") == Money("USD", -1, -500_000_000)
    assert Money.parse("USD", "-1.5") + Money.parse("USD", "0.75") == Money("USD", 0, -750_000_000)
    assert Money.parse("USD", "1.25") - Money.parse("USD", "2.5") == Money("USD", -1, -250_000_000)
    assert -Money("USD", 3, 10) == Money("USD", -3, -10)
    assert Money("USD", 0, -750_000_000).format() == "-$0.75"
    for bad in ({"currency_code": "USD", "units": 1, "nanos": -1}, {"currency_code": "USD", "units": 0,
                "nanos": 10**9}, {"currency_code": "usd", "units": 1, "nanos": 0}, {"units": 1}):
        with pytest.raises(MoneyError):
            Money.from_dict(bad)
    with pytest.raises(MoneyError):
        Money.parse("USD", "1") + Money.parse("EUR", "1")


def test_conversion_goes_through_eur_exactly() -> None:
    price = Money.parse("USD", "19.99")
    exact = Fraction("19.99") / Fraction(EUR_RATES["USD"]) * Fraction(EUR_RATES["JPY"])
    converted = price.convert("JPY", EUR_RATES)
    assert converted.currency_code == "JPY" and converted.total_nanos == round(exact * 10**9)
    assert price.convert("EUR", EUR_RATES) == Money("EUR", 17, 682_441_398)  # 19.99 / 1.1305, half-even
    assert Money.parse("EUR", "10").convert("USD", EUR_RATES) == Money.parse("USD", "11.305")
    assert price.convert("USD", EUR_RATES) is price
    assert Money.parse("USD", "-2").convert("EUR", EUR_RATES).total_nanos < 0
    with pytest.raises(MoneyError):
        price.convert("XXX", EUR_RATES)


# -- services' logic -----------------------------------------------------------------------------
def test_luhn_card_type_and_expiry() -> None:
    assert luhn_valid("4432801561520454") and not luhn_valid("4432801561520455") and not luhn_valid("44x2")
    assert card_type("4111111111111111") == "visa" and card_type("5555555555554444") == "mastercard"
    assert card_type("2221000000000009") == "mastercard" and card_type("378282246310005") is None
    today = datetime.date(2025, 6, 15)
    assert validate_card("4432-8015-6152-0454", 6, 2025, today) == "visa"  # this month still works
    with pytest.raises(CardError, match="expired on 5/2025"):
        validate_card("4432 8015 6152 0454", 5, 2025, today)
    with pytest.raises(CardError, match="Only VISA or MasterCard"):
        validate_card("378282246310005", 1, 2030, today)
    with pytest.raises(CardError, match="invalid"):
        validate_card("1234567812345678", 1, 2030, today)
    rng = random.Random(7)
    assert all(luhn_valid(visa_number(rng)) for _ in range(100))


def test_shipping_ads_and_email() -> None:
    assert quote(0).is_zero() and quote(3) == Money.parse("USD", "8.99")
    assert re.fullmatch(r"[A-Z]{2}-\d+-\d+", tracking_id({"street_address": "1 Main", "city": "X"}))
    assert ads_for(["kitchen"]) == ADS["kitchen"] and len(ads_for([])) == 2
    order = {"order_id": "o-1", "shipping_tracking_id": "AB-1-2", "shipping_cost": Money.parse("USD", "8.99").to_dict(),
             "shipping_address": {"street_address": "1 <Main>", "city": "X", "state": "Y", "zip_code": "1",
                                  "country": "Z"},
             "items": [{"item": {"product_id": "6E92ZMYYFZ", "quantity": 2}, "name": "Stoneware Mug",
                        "cost": Money.parse("USD", "8.99").to_dict()}]}
    message = confirmation("a@b.c", order)
    assert "o-1" in message["subject"] and "Stoneware Mug" in message["html"] and "1 &lt;Main&gt;" in message["html"]


def test_frontend_helpers() -> None:
    assert local_referer("http://evil.example/product/X?a=1") == "/product/X?a=1"
    assert local_referer("") == "/" and local_referer("//evil.example/x") == "/x"


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


# -- in-process (TestClient) -----------------------------------------------------------------------
@pytest.fixture
async def client():
    async with TestClient(app) as c:
        yield c
        await asyncio.sleep(0)
        assert c.pool.in_use() == 0, "every slot comes back"


async def test_browse_in_process(client: TestClient) -> None:
    await scenario_browse(InProcessShopper(client))


async def test_cart_and_checkout_in_process(client: TestClient) -> None:
    await scenario_cart_and_checkout(InProcessShopper(client))


async def test_errors_keep_the_session_in_process(client: TestClient) -> None:
    await scenario_errors(InProcessShopper(client))


async def test_concurrent_carts_never_mix_in_process(client: TestClient) -> None:
    await concurrent_carts(lambda: InProcessShopper(client))


# -- a real node on every transport ----------------------------------------------------------------
@pytest.fixture(scope="module")
def shop_url(transport: str):
    with run_node("apps.online_boutique:app", transport=transport) as (port, _):
        yield f"http://127.0.0.1:{port}"


async def on_node(url: str, scenario: Callable[[Shopper], Awaitable[None]]) -> None:
    shopper = HttpShopper(url)
    try:
        await scenario(shopper)
    finally:
        await shopper.close()


async def test_browse_on_node(shop_url: str) -> None:
    await on_node(shop_url, scenario_browse)


async def test_cart_and_checkout_on_node(shop_url: str) -> None:
    await on_node(shop_url, scenario_cart_and_checkout)


async def test_errors_keep_the_session_on_node(shop_url: str) -> None:
    await on_node(shop_url, scenario_errors)


async def test_concurrent_carts_never_mix_on_node(shop_url: str) -> None:
    shoppers: list[HttpShopper] = []

    def make() -> HttpShopper:
        shoppers.append(HttpShopper(shop_url))
        return shoppers[-1]

    try:
        await concurrent_carts(make)
    finally:
        await asyncio.gather(*(s.close() for s in shoppers))


async def test_load_profile_runs_clean_on_node(shop_url: str) -> None:
    summary = await run_load(shop_url, users=4, duration=2.0, seed=3)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["requests"] > 20 and "GET /product/{id}" in summary["kinds"]
    assert set(summary["statuses"]) <= {"200", "302"}


def test_load_profile_refuses_remote_targets() -> None:
    with pytest.raises(ValueError, match="this machine"):
        asyncio.run(run_load("http://example.com:8080", users=1, duration=1))
    with pytest.raises(ValueError, match="duration"):
        asyncio.run(run_load("http://127.0.0.1:1", users=1, duration=10_000))
