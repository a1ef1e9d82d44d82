"""The shop's own data: catalog, EUR-based exchange rates and ads.

The product ids are Online Boutique's, so its clients and load generator work unchanged;
names, descriptions, pictures and prices are this shop's own. Prices are decimal strings
turned into exact ``Money`` (never floats). Rates are units of a currency per 1 EUR, kept
as strings so conversions stay exact.
"""

from __future__ import annotations

from typing import Any

from apps.online_boutique.money import Money


def _product(pid: str, name: str, description: str, price: str, categories: list[str]) -> dict[str, Any]:
    return {
        "id": pid,
        "name": name,
        "description": description,
        "picture": f"/static/img/{pid}.svg",
        "price_usd": Money.parse("USD", price).to_dict(),
        "categories": categories,
    }


PRODUCTS: list[dict[str, Any]] = [
    _product("OLJCESPC7Z", "Harbor Sunglasses", "Polarised lenses in a light acetate frame, made for long "
             "afternoons by the water.", "19.99", ["accessories"]),
    _product("66VCHSJNUP", "Linen Tank Top", "A breezy, garment-dyed linen tank that softens with every "
             "wash.", "18.99", ["clothing", "tops"]),
    _product("1YMWWN1N4O", "Field Watch", "A 38 mm steel field watch with a sand dial, luminous hands "
             "and a canvas strap.", "109.99", ["accessories"]),
    _product("L9ECAV7KIM", "Suede Loafers", "Unlined suede loafers on a flexible sole: slip them on and "
             "walk all day.", "89.99", ["footwear"]),
    _product("2ZYFJ3GM2N", "Travel Hairdryer", "A foldable 1200 W dryer with two heat settings and a cool "
             "shot, dual voltage.", "24.99", ["hair", "beauty"]),
    _product("0PUK6V6EV0", "Brass Candle Holder", "A weighty, hand-turned brass holder for a single taper "
             "candle.", "18.99", ["decor", "home"]),
    _product("LS4PSXUNUM", "Salt & Pepper Mills", "A pair of oak mills with ceramic grinders, adjustable "
             "from fine to coarse.", "18.49", ["kitchen"]),
    _product("9SIQT8TOJO", "Bamboo Storage Jar", "A borosilicate glass jar with an airtight bamboo lid for "
             "coffee, tea or pasta.", "5.49", ["kitchen"]),
    _product("6E92ZMYYFZ", "Stoneware Mug", "A 350 ml speckled stoneware mug, glazed inside, made to be "
             "held with both hands.", "8.99", ["kitchen"]),
]
PRODUCTS_BY_ID: dict[str, dict[str, Any]] = {p["id"]: p for p in PRODUCTS}

# Units per 1 EUR (the reference rates Online Boutique's currency service ships with).
EUR_RATES: dict[str, str] = {
    "EUR": "1.0", "USD": "1.1305", "JPY": "126.40", "BGN": "1.9558", "CZK": "25.592", "DKK": "7.4609",
    "GBP": "0.85970", "HUF": "315.51", "PLN": "4.2996", "RON": "4.7463", "SEK": "10.5375", "CHF": "1.1360",
    "ISK": "136.80", "NOK": "9.8040", "HRK": "7.4210", "RUB": "74.4208", "TRY": "6.1247", "AUD": "1.6072",
    "BRL": "4.2682", "CAD": "1.5128", "CNY": "7.5857", "HKD": "8.8743", "IDR": "15999.40", "ILS": "4.0875",
    "INR": "79.4320", "KRW": "1275.05", "MXN": "21.7999", "MYR": "4.6289", "NZD": "1.6679", "PHP": "59.083",
    "SGD": "1.5349", "THB": "36.012", "ZAR": "16.0583",
}

# What the frontend offers (upstream's whitelist), in display order.
FRONTEND_CURRENCIES: list[str] = ["USD", "EUR", "CAD", "JPY", "GBP", "TRY"]
DEFAULT_CURRENCY = "USD"

# Ads by context keyword (product categories); the ad service picks random ones without a match.
ADS: dict[str, list[dict[str, str]]] = {
    "clothing": [{"redirect_url": "/product/66VCHSJNUP", "text": "Linen tank tops for the warm days: 20% off."}],
    "accessories": [{"redirect_url": "/product/1YMWWN1N4O", "text": "The field watch: steel, sand dial, for life."}],
    "footwear": [{"redirect_url": "/product/L9ECAV7KIM", "text": "Suede loafers: buy one pair, get socks free."}],
    "hair": [{"redirect_url": "/product/2ZYFJ3GM2N", "text": "Travel hairdryer: folds into any bag."}],
    "decor": [{"redirect_url": "/product/0PUK6V6EV0", "text": "Brass candle holders: warm light for long evenings."}],
    "kitchen": [
        {"redirect_url": "/product/9SIQT8TOJO", "text": "Bamboo storage jars: keep the coffee fresh."},
        {"redirect_url": "/product/6E92ZMYYFZ", "text": "Stoneware mugs, glazed by hand: 10% off this week."},
    ],
}
