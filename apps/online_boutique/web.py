"""The frontend's HTTP conventions: session and currency cookies, HTML or JSON, redirects, errors.

Cookie names are upstream's (``shop_session-id``, ``shop_currency``) so clients written for
Online Boutique keep their session. Every page is built as one dict of data; a client that
sends ``Accept: application/json`` gets that dict, a browser gets it rendered by Jinja2.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from apps.online_boutique.data import DEFAULT_CURRENCY, FRONTEND_CURRENCIES
from apps.online_boutique.render import render
from spright import Context

SESSION_COOKIE = "shop_session-id"
CURRENCY_COOKIE = "shop_currency"
COOKIE_MAX_AGE = 48 * 3600  # upstream's cookieMaxAge
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HTML = "text/html; charset=utf-8"
MESSAGES = {400: "Bad request", 402: "Payment declined", 404: "Not found", 405: "Method not allowed"}


class Visit:
    """One request to the frontend: who (session), in which currency, and how to answer."""

    def __init__(self, ctx: Context, *, session: bool = True) -> None:
        self.ctx = ctx
        cookies = ctx.cookies
        self.wants_json = "application/json" in ctx.headers.get("accept", "")
        currency = cookies.get(CURRENCY_COOKIE, DEFAULT_CURRENCY)
        self.currency = currency if currency in FRONTEND_CURRENCIES else DEFAULT_CURRENCY
        self.session_id = cookies.get(SESSION_COOKIE, "")
        if session and not _SESSION_ID.match(self.session_id):
            self.session_id = str(uuid.uuid4())  # a new visitor: the session starts with this answer
            self.set_cookie(SESSION_COOKIE, self.session_id)

    def set_cookie(self, name: str, value: str, max_age: int = COOKIE_MAX_AGE) -> None:
        self.ctx.set_header("set-cookie", f"{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax")

    def page(self, template: str, **data: Any) -> dict[str, Any] | str:
        """The page's data as JSON, or rendered into ``template`` as HTML."""
        data = {"session_id": self.session_id, "user_currency": self.currency, **data}
        if self.wants_json:
            return data
        self.ctx.content_type = HTML
        return render(template, **data)

    def redirect(self, location: str, status: int = 302) -> dict[str, Any] | str:
        """Upstream answers its POSTs with 302 Found; browsers then GET ``location``."""
        self.ctx.redirect(location, status)
        if self.wants_json:
            return {"redirect": location}
        self.ctx.content_type = HTML
        return f'<a href="{location}">Found</a>.\n'

    def error(self, status: int, message: str) -> dict[str, Any] | str:
        """An error answer that keeps the session: status, message, and a way back."""
        self.ctx.status = status
        if self.wants_json:
            return {"error": message, "status": status}
        self.ctx.content_type = HTML
        title = MESSAGES.get(status, "Something went wrong")
        return render("error.html", status=status, title=title, message=message, session_id=self.session_id,
                      user_currency=self.currency, currencies=FRONTEND_CURRENCIES, cart_size=None)


def local_referer(referer: str) -> str:
    """Where to go back to after a POST: the referer's path (never another site), else ``/``."""
    parts = urlsplit(referer)
    path = parts.path if parts.path.startswith("/") and not parts.path.startswith("//") else "/"
    return path + (f"?{parts.query}" if parts.query else "")
