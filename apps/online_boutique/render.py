"""Jinja2 templates (package data under ``templates/``), shared by the frontend and email.

Autoescaping is on for HTML: product names and addresses come from users or data and must
never become markup.

What repeats from page to page (a product card, the currency menu, an ad) is rendered once
per distinct input and kept (``fragment``): a page costs rendering only where it differs.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from apps.online_boutique.money import SYMBOLS, format_money

TEMPLATES = Path(__file__).parent / "templates"

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
env.filters["money"] = format_money
env.globals["currency_symbol"] = lambda code: SYMBOLS.get(code, code)
MAX_FRAGMENTS = 4096  # distinct fragments kept; past it the cache starts over
_fragments: dict[bytes, Markup] = {}


def fragment(macro: str, *args: Any) -> Markup:
    """``_macros.html``'s ``macro`` rendered with ``args``, once per distinct ``args`` (their
    JSON is the key, so equal data hits whatever object holds it)."""
    key = orjson.dumps((macro, args))
    found = _fragments.get(key)
    if found is None:
        if len(_fragments) >= MAX_FRAGMENTS:
            _fragments.clear()
        found = _fragments[key] = Markup(getattr(env.get_template("_macros.html").module, macro)(*args))
    return found


env.globals["fragment"] = fragment


def render(template: str, **data: Any) -> str:
    """Render ``template`` with ``data`` (plus the current year, for the footer and forms)."""
    return env.get_template(template).render(year=datetime.date.today().year, **data)
