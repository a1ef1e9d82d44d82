"""A real browser reads wordstream's words as they are made: Chromium's EventSource on a real node.

Debian's chromium driven by Playwright, as tests/test_online_boutique_browser.py does. The
page marks how many words it shows (``data-count``) and when the stream's ``done`` event came
(``data-done``), and keeps each word's arrival time (``window.arrivals``): the test waits on
those, never on a sleep. The final page is saved to tests/artifacts/.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from apps.wordstream import markov
from spright.testing import run_node

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
PROMPT, WORDS, PACE_MS = "Down the rabbit-hole", 24, 100  # 2.4 s of words: more than a window (8) of them

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.needs("chromium")]


def test_a_browser_shows_the_words_as_they_are_made() -> None:
    from playwright import sync_api

    expected = markov.words(markov.tokenize(PROMPT), WORDS)
    ARTIFACTS.mkdir(exist_ok=True)
    with (run_node("apps.wordstream:app", transport="auto") as (port, _),
          tempfile.TemporaryDirectory(prefix="spright-chromium-") as profile,
          sync_api.sync_playwright() as playwright):
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=ARGS, headless=True, viewport={"width": 1000, "height": 600})
        try:
            page = browser.new_page()
            streams: list[str] = []
            page.on("request", lambda r: streams.append(r.url) if "/generate?" in r.url else None)
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.title() == "wordstream"
            page.fill("input[name=prompt]", PROMPT)
            page.fill("input[name=n]", str(WORDS))
            page.fill("input[name=pace]", str(PACE_MS))
            page.click("button")

            # one snapshot, taken in the page in one go: three words shown, the stream not over
            early = page.wait_for_function(
                """() => { const t = document.getElementById("text");
                           return Number(t.dataset.count) >= 3 && !("done" in t.dataset) && t.textContent; }""",
                polling=10, timeout=30_000).json_value()
            shown = early.split(" ")
            assert 3 <= len(shown) < WORDS and shown == expected[: len(shown)]

            page.wait_for_selector("#text[data-done]", state="attached", timeout=30_000)
            text = page.locator("#text")
            assert text.get_attribute("data-count") == str(WORDS)
            assert text.text_content() == " ".join(expected)  # what the model makes, UTF-8 and all
            assert page.locator("#status").inner_text() == f"{WORDS} words"
            # the words came over the stream's life, not in one burst at its end: the model
            # waits PACE_MS before each word, so the first and last are that far apart at least
            arrivals = page.evaluate("window.arrivals")
            assert len(arrivals) == WORDS
            assert arrivals[-1] - arrivals[0] >= (WORDS - 1) * PACE_MS / 2, arrivals  # a burst: ~0 ms
            assert page.evaluate("source.readyState") == 2  # CLOSED by the page at `done`, else it reconnects
            assert len(streams) == 1, streams
            page.screenshot(path=str(ARTIFACTS / "wordstream.png"), full_page=True)
        finally:
            browser.close()
