"""Online Boutique on spright: money, card checks, every request kind in-process and on a real node."""

from __future__ import annotations

import asyncio
import datetime
import random
import re
from fractions import Fraction

import pytest

from apps.online_boutique import app
from apps.online_boutique.ad import ads_for
from apps.online_boutique.data import ADS, EUR_RATES
from apps.online_boutique.load import run as run_load
from apps.online_boutique.load import visa_number
from apps.online_boutique.mail import confirmation
from apps.online_boutique.money import Money, MoneyError, total
from apps.online_boutique.payment import CardError, card_type, luhn_valid, validate_card
from apps.online_boutique.shipping import quote, tracking_id
from apps.online_boutique.web import local_referer
from spright.testing import TestClient, run_node
from tests.kit.boutique import (
    HttpShopper,
    InProcessShopper,
    concurrent_carts,
    on_node,
    scenario_browse,
    scenario_cart_and_checkout,
    scenario_errors,
)


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
