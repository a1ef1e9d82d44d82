"""Jinja2 templates (package data under ``templates/``), shared by the frontend and email.

Autoescaping is on for HTML: product names and addresses come from users or data and must
never become markup.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

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


def render(template: str, **data: Any) -> str:
    """Render ``template`` with ``data`` (plus the current year, for the footer and forms)."""
    return env.get_template(template).render(year=datetime.date.today().year, **data)
