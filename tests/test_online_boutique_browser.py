"""A real browser shops on a real node: home → product → cart → checkout → confirmation.

Debian's chromium, driven by Playwright for Python (never ``playwright install``: the browser
is the system's), headless, with a fresh profile and no background network traffic. The
final page is saved to tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from spright.testing import run_node

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.needs("chromium")]


def test_a_browser_buys_a_watch() -> None:
    from playwright import sync_api

    ARTIFACTS.mkdir(exist_ok=True)
    with (run_node("apps.online_boutique:app", transport="auto") as (port, _),
          tempfile.TemporaryDirectory(prefix="spright-chromium-") as profile,
          sync_api.sync_playwright() as playwright):
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=ARGS, headless=True, viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.title() == "Spright Boutique"
            assert page.locator("a.card").count() == 9
            page.screenshot(path=str(ARTIFACTS / "boutique-home.png"), full_page=True)

            page.click("a.card:has-text('Field Watch')")
            page.wait_for_url("**/product/1YMWWN1N4O")
            assert page.locator("h1").inner_text() == "Field Watch"
            assert page.locator(".price").inner_text() == "$109.99"
            page.select_option("#quantity", "2")
            page.click("button:has-text('Add to cart')")

            page.wait_for_url("**/cart")  # POST /cart answered 302 → the browser followed it
            assert page.get_by_test_id("cart-size").inner_text() == "2"
            assert page.get_by_test_id("cart-total").inner_text() == "$228.97"  # 2 * 109.99 + 8.99
            page.fill("input[name=email]", "browser@example.com")
            page.click("button:has-text('Place order')")

            page.wait_for_selector("text=Your order is complete!")
            assert page.get_by_test_id("total-paid").inner_text() == "$228.97"
            assert len(page.get_by_test_id("order-id").inner_text()) == 36
            page.screenshot(path=str(ARTIFACTS / "boutique-order.png"), full_page=True)

            page.goto(f"http://127.0.0.1:{port}/cart")
            assert "Your shopping cart is empty" in page.content()
            assert failed == [], failed  # every page, stylesheet and picture loaded
        finally:
            browser.close()
