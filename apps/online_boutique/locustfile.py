"""Upstream Online Boutique's Locust load generator, for this shop.

    locust -f apps/online_boutique/locustfile.py --host http://127.0.0.1:8080

Upstream's behaviour (src/loadgenerator/locustfile.py): each user keeps one session, opens the
home page first, then picks tasks with the weights index 1, setCurrency 2, browseProduct 10,
addToCart 2 (the product page, then the form post), viewCart 3 and checkout 1 (addToCart, then
the checkout form), waiting 1 to 10 s between tasks. Products, currencies, quantities and the
checkout form come from the same place as ``apps.online_boutique.load``, the asyncio load
generator the benchmarks use; Faker's random addresses are replaced by generated ones (the
form fields and their formats are upstream's).
"""

from __future__ import annotations

import datetime
import random

from locust import FastHttpUser, TaskSet, between

from apps.online_boutique.data import FRONTEND_CURRENCIES
from apps.online_boutique.load import PRODUCT_IDS, QUANTITIES, TASK_WEIGHTS, visa_number


def index(shopper: TaskSet) -> None:
    shopper.client.get("/")


def set_currency(shopper: TaskSet) -> None:
    shopper.client.post("/setCurrency", {"currency_code": random.choice(FRONTEND_CURRENCIES)})


def browse_product(shopper: TaskSet) -> None:
    shopper.client.get(f"/product/{random.choice(PRODUCT_IDS)}", name="/product/{id}")


def view_cart(shopper: TaskSet) -> None:
    shopper.client.get("/cart")


def add_to_cart(shopper: TaskSet) -> None:
    product = random.choice(PRODUCT_IDS)
    shopper.client.get(f"/product/{product}", name="/product/{id}")
    shopper.client.post("/cart", {"product_id": product, "quantity": random.choice(QUANTITIES)})


def checkout(shopper: TaskSet) -> None:
    add_to_cart(shopper)
    year = datetime.date.today().year + 1
    n = random.randrange(1, 10_000)
    shopper.client.post("/cart/checkout", {
        "email": f"shopper{n}@example.com", "street_address": f"{n} Main Street", "zip_code": f"{n:05d}",
        "city": "Springfield", "state": "CA", "country": "United States",
        "credit_card_number": visa_number(random.Random()), "credit_card_expiration_month": random.randint(1, 12),
        "credit_card_expiration_year": random.randint(year, year + 70),
        "credit_card_cvv": str(random.randint(100, 999)),
    })


TASKS = {"index": index, "setCurrency": set_currency, "browseProduct": browse_product, "addToCart": add_to_cart,
         "viewCart": view_cart, "checkout": checkout}


class UserBehavior(TaskSet):
    tasks = {TASKS[name]: weight for name, weight in TASK_WEIGHTS.items()}

    def on_start(self) -> None:
        index(self)


class WebsiteUser(FastHttpUser):
    tasks = [UserBehavior]
    wait_time = between(1, 10)
