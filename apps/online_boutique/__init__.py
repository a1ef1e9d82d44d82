"""Online Boutique on spright: Google's ten-service demo shop as spright functions.

frontend (every HTTP route) calls productcatalog, currency, cart, recommendation, shipping,
checkout, payment, email and ad over the data plane with ``ctx.call``; checkout in turn
calls cart, productcatalog, currency, shipping, payment and email. Run it with
``python -m apps.online_boutique`` (or ``make run``).
"""

from __future__ import annotations

from apps.online_boutique.ad import ad
from apps.online_boutique.cart import cart
from apps.online_boutique.catalog import productcatalog
from apps.online_boutique.checkout import checkout
from apps.online_boutique.currency import currency
from apps.online_boutique.frontend import frontend
from apps.online_boutique.mail import mail
from apps.online_boutique.payment import payment
from apps.online_boutique.recommendation import recommendation
from apps.online_boutique.shipping import shipping
from spright import App, PoolConfig
from spright.data.config import MiB

# Pages are a few KiB to tens of KiB and service calls are small: no 8 MiB slots needed.
POOL = PoolConfig(max_body=1 * MiB, classes=((4096, 4096), (65536, 512)), large_slots=16)

app = App("online_boutique", pool=POOL)
web = app.add_function(frontend, name="frontend", concurrency=256)
for handler, name in ((productcatalog, "productcatalog"), (currency, "currency"), (cart, "cart"),
                      (recommendation, "recommendation"), (shipping, "shipping"), (checkout, "checkout"),
                      (payment, "payment"), (mail, "email"), (ad, "ad")):
    app.add_function(handler, name=name, concurrency=256)

app.route("/", web)
app.route("/setCurrency", web, methods=["POST"])
app.route("/product/{id}", web)
app.route("/cart", web, methods=["GET", "POST"])
app.route("/cart/checkout", web, methods=["POST"])
app.route("/cart/empty", web, methods=["POST"])
app.route("/logout", web)
app.route("/static/{path:path}", web)
app.route("/_healthz", web)

__all__ = ["app"]
