"""The handlers: ``page`` (the browser's page), ``prompt`` (the tokenizer) and ``generate``
(the model, streaming one word per Server-Sent Event as it produces it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from apps.wordstream import markov
from spright import Context, HTTPError, sse

PAGE = Path(__file__).with_name("page.html").read_text(encoding="utf-8")
MAX_WORDS = 200
MAX_PACE_MS = 1000  # below the route's timeout: the timeout runs between two parts of a stream


async def page(ctx: Context) -> str:
    """``GET /``: the page whose EventSource reads ``/generate``."""
    ctx.content_type = "text/html; charset=utf-8"
    return PAGE


def _number(ctx: Context, name: str, default: int, high: int) -> int:
    value = ctx.query.get(name, str(default))
    if not value.isdigit() or int(value) > high:
        raise HTTPError(400, f"{name} must be a whole number from 0 to {high}")
    return int(value)


async def prompt(ctx: Context) -> dict[str, Any]:
    """The first hop: ``?prompt=`` as the model's tokens, with ``n`` (words to generate) and
    ``pace`` (ms per word). Its return value is ``generate``'s payload."""
    tokens = markov.tokenize(ctx.query.get("prompt", ""))
    if not tokens:
        raise HTTPError(400, "say something: /generate?prompt=...")
    return {"tokens": tokens, "n": _number(ctx, "n", 40, MAX_WORDS), "pace": _number(ctx, "pace", 80, MAX_PACE_MS)}


async def think(seconds: float) -> None:
    """The model's time per word (a real model computes here)."""
    await asyncio.sleep(seconds)


async def generate(ctx: Context):
    """The last hop, an async generator: each ``yield`` is sent to the client at once, as one
    SSE event. Status and headers are set before the first ``yield``: they leave with it."""
    request = ctx.json()
    ctx.content_type = "text/event-stream"
    ctx.set_header("cache-control", "no-cache")
    words = markov.words(request["tokens"], request["n"])
    # an EventSource that lost its connection reconnects with the id of the last event it got
    last = ctx.headers.get("last-event-id", "")
    for i in range(int(last) + 1 if last.isdigit() else 0, len(words)):
        await think(request["pace"] / 1000)
        yield sse(words[i], event="word", id=str(i))
    yield sse({"words": len(words)}, event="done")  # the page closes its EventSource (else it reconnects)
