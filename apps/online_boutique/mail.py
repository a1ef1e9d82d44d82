"""email: SendOrderConfirmation — render the confirmation mail from a template and "send" it.

Like upstream's dummy email service, nothing leaves the machine: the message is rendered
(Jinja2, as upstream's Python service does), logged, and kept in a small in-memory outbox.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from apps.online_boutique.render import render
from apps.online_boutique.rpc import field, request
from spright import Context, HTTPError

log = logging.getLogger("online_boutique.email")
OUTBOX: deque[dict[str, str]] = deque(maxlen=100)


def confirmation(email: str, order: dict[str, Any]) -> dict[str, str]:
    """The message for ``order``: recipient, subject and the rendered HTML body."""
    return {
        "to": email,
        "subject": f"Your order {order.get('order_id', '')} is confirmed",
        "html": render("confirmation.html", order=order),
    }


async def mail(ctx: Context) -> dict[str, Any]:
    """``{"email", "order"}`` → ``{"sent": true, "to", "subject"}``."""
    payload = request(ctx)
    email = field(payload, "email", str)
    if "@" not in email:
        raise HTTPError(400, f"not an email address: {email!r}")
    message = confirmation(email, field(payload, "order", dict))
    OUTBOX.append(message)
    log.info("order confirmation to %s: %s (%d bytes)", email, message["subject"], len(message["html"]))
    return {"sent": True, "to": email, "subject": message["subject"]}
