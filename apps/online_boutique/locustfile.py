"""Online Boutique's load generator for Locust: upstream's shopper, pointed at this shop.

    .venv/bin/locust -f apps/online_boutique/locustfile.py --host http://127.0.0.1:8080

It behaves like upstream's ``src/loadgenerator/locustfile.py`` (GoogleCloudPlatform/microservices-demo):
every simulated user is one ``FastHttpUser`` with its own cookie jar, so one shop session
(``shop_session-id``) and one currency (``shop_currency``). The user opens the home page once, then
repeatedly picks a task by weight and waits 1 to 10 s:

    index 1          GET  /
    setCurrency 2    POST /setCurrency     currency_code
    browseProduct 10 GET  /product/<id>
    addToCart 2      GET  /product/<id>, then POST /cart   product_id, quantity (1..10)
    viewCart 3       GET  /cart
    checkout 1       addToCart, then POST /cart/checkout   email, street_address, zip_code, city,
                     state, country, credit_card_number (a VISA number), credit_card_expiration_month,
                     credit_card_expiration_year (next year to 70 years on), credit_card_cvv

The product ids and currencies are upstream's own lists, not read from this app, so the file keeps
testing that a client written for upstream works unchanged. Upstream fills the checkout form with
Faker; this file makes the same kinds of values itself, so Locust is its only dependency. Stats are
named by URL as upstream's are: one row per product page. Upstream also defines setLanguage,
empty_cart and logout but never schedules them, so they are left out here.
"""

from __future__ import annotations

import datetime
import random

from locust import FastHttpUser, TaskSet, between

# upstream's catalog ids and its setCurrency choices
PRODUCTS = ("0PUK6V6EV0", "1YMWWN1N4O", "2ZYFJ3GM2N", "66VCHSJNUP", "6E92ZMYYFZ", "9SIQT8TOJO", "L9ECAV7KIM",
            "LS4PSXUNUM", "OLJCESPC7Z")
CURRENCIES = ("EUR", "USD", "JPY", "CAD", "GBP", "TRY")
MAX_QUANTITY = 10

# The checkout form's fake shopper, in the shapes Faker's en_US provider gives upstream.
FIRST_NAMES = ("james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david", "maria")
LAST_NAMES = ("smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "lopez", "wilson")
STREETS = ("Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park")
STREET_SUFFIXES = ("Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Place")
CITIES = ("Lake Jennifer", "East Michael", "Port Davidmouth", "New Maria", "South Lindaview", "Jonesburgh")
STATES = ("AL", "AK", "AZ", "CA", "CO", "FL", "GA", "HI", "IL", "MA", "NY", "OR", "TX", "WA", "WI")
COUNTRIES = ("United States", "Canada", "Japan", "Germany", "Turkey", "Cote d'Ivoire",
             "Holy See (Vatican City State)", "Saint Kitts and Nevis", "Brazil", "India")
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")


def visa_number() -> str:
    """A 16-digit VISA number (a 4, fourteen random digits, the Luhn check digit), as Faker's ``visa``."""
    digits = [4, *(random.randrange(10) for _ in range(14))]
    # Luhn: counting from the check digit (position 0) leftwards, odd positions are doubled
    doubled = sum(d * 2 - 9 if d > 4 else d * 2 for d in digits[::-2])
    check = (10 - (doubled + sum(digits[-2::-2])) % 10) % 10
    return "".join(map(str, digits)) + str(check)


def order_form() -> dict[str, str | int]:
    """Upstream's PlaceOrder form with a new random shopper and card each time."""
    next_year = datetime.date.today().year + 1
    return {
        "email": f"{random.choice(FIRST_NAMES)}{random.choice(LAST_NAMES)}@{random.choice(EMAIL_DOMAINS)}",
        "street_address": f"{random.randint(1, 99999)} {random.choice(STREETS)} {random.choice(STREET_SUFFIXES)}",
        "zip_code": f"{random.randint(501, 99950):05d}",
        "city": random.choice(CITIES),
        "state": random.choice(STATES),
        "country": random.choice(COUNTRIES),
        "credit_card_number": visa_number(),
        "credit_card_expiration_month": random.randint(1, 12),
        "credit_card_expiration_year": random.randint(next_year, next_year + 70),
        "credit_card_cvv": str(random.randint(100, 999)),
    }


# -- the tasks: upstream's index, setCurrency, browseProduct, addToCart, viewCart, checkout -------
def index(shopper: TaskSet) -> None:
    shopper.client.get("/")


def set_currency(shopper: TaskSet) -> None:
    shopper.client.post("/setCurrency", {"currency_code": random.choice(CURRENCIES)})


def browse_product(shopper: TaskSet) -> None:
    shopper.client.get(f"/product/{random.choice(PRODUCTS)}")


def add_to_cart(shopper: TaskSet) -> None:
    product = random.choice(PRODUCTS)
    shopper.client.get(f"/product/{product}")
    shopper.client.post("/cart", {"product_id": product, "quantity": random.randint(1, MAX_QUANTITY)})


def view_cart(shopper: TaskSet) -> None:
    shopper.client.get("/cart")


def checkout(shopper: TaskSet) -> None:
    add_to_cart(shopper)
    shopper.client.post("/cart/checkout", order_form())


TASK_WEIGHTS = {index: 1, set_currency: 2, browse_product: 10, add_to_cart: 2, view_cart: 3, checkout: 1}


class UserBehavior(TaskSet):
    tasks = TASK_WEIGHTS

    def on_start(self) -> None:
        index(self)  # the home page first: the shop's answer starts this user's session


class WebsiteUser(FastHttpUser):
    tasks = [UserBehavior]
    wait_time = between(1, 10)
