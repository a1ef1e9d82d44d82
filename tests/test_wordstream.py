"""wordstream (apps/wordstream): the model's words as Server-Sent Events, each sent as it is made.

In process (TestClient): the model's think time is replaced by a gate the test opens one word
at a time, so "a word reaches the client before the next is made" is checked by causality,
not by a clock. The browser's side is tests/test_wordstream_browser.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import orjson
import pytest

from apps.wordstream import app, functions, markov
from spright import sse
from spright.testing import TestClient

PROMPT = "the white rabbit"
TOKENS = ["the", "white", "rabbit"]


def events(stream: bytes) -> list[dict[str, str]]:
    """An event stream parsed as a browser's EventSource does (WHATWG HTML, "Server-sent
    events"): lines of ``field: value``, an event dispatched at each blank line, ``data``
    lines joined by newlines, and ``event`` defaulting to "message"."""
    out: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in stream.decode().split("\n"):
        if not line:
            if data:
                out.append({"event": "message", **fields, "data": "\n".join(data)})
            fields, data = {}, []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("event", "id", "retry"):
            fields[name] = value
    return out


class Gate:
    """Stands in for the model's think time (``functions.think``): word i is made only once the
    test has let it, and whether the model saw its cancellation is recorded."""

    def __init__(self) -> None:
        self._permits: asyncio.Queue[None] = asyncio.Queue()
        self.made = 0  # think times that ended: words the model went on to make
        self.cancelled = asyncio.Event()

    def allow(self) -> None:
        self._permits.put_nowait(None)

    async def think(self, seconds: float) -> None:
        try:
            await self._permits.get()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.made += 1


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(app) as c:
        yield c


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    g = Gate()
    monkeypatch.setattr(functions, "think", g.think)  # the workers run in this process
    return g


def test_the_model_continues_a_prompt_with_the_corpus_words_the_same_every_time() -> None:
    words = markov.words(TOKENS, 60)
    assert len(words) == 60 and words == markov.words(TOKENS, 60)  # deterministic (a CRC seed, not hash())
    assert words != markov.words(["alice"], 60)
    follows = markov.CHAIN.follows
    assert words[0] in follows["rabbit"]  # the prompt's last word it knows leads
    for before, after in itertools.pairwise(words):  # every step is one the text takes
        assert after in follows.get(markov.key(before), markov.CHAIN.openings)
    assert markov.tokenize("  The WHITE, rabbit! -- ") == TOKENS
    assert markov.words(["jabberwock"], 3)[0] in markov.CHAIN.openings  # unknown words: a sentence's start


async def test_each_word_is_one_sse_event_then_done(client: TestClient) -> None:
    r = await client.get(f"/generate?prompt={PROMPT}&n=12&pace=0")
    assert r.status == 200
    assert r.headers["content-type"] == "text/event-stream" and r.headers["cache-control"] == "no-cache"
    expected = markov.words(TOKENS, 12)
    assert events(r.body) == [
        *({"event": "word", "id": str(i), "data": word} for i, word in enumerate(expected)),
        {"event": "done", "data": '{"words":12}'},
    ]
    assert r.body.startswith(f"event: word\nid: 0\ndata: {expected[0]}\n\n".encode())  # the framing itself
    assert client.pool.in_use() == 0


async def test_each_word_reaches_the_client_before_the_next_is_made(client: TestClient, gate: Gate) -> None:
    """The model makes word i+1 only once the test lets it, and the test lets it only after
    word i arrived: if parts were held until the handler ends, this would wait for ever (the
    timeout turns that into a failure)."""
    expected = markov.words(TOKENS, 10)
    gate.allow()  # the head of a streamed answer leaves with its first part
    async with asyncio.timeout(30), client.stream("GET", f"/generate?prompt={PROMPT}&n=10") as reader:
        assert reader.status == 200 and reader.headers["content-type"] == "text/event-stream"
        parts = aiter(reader)
        for i, word in enumerate(expected):
            part = await anext(parts)  # one part, one whole event
            assert part == sse(word, event="word", id=str(i)).encode()
            assert gate.made == i + 1  # and no more: the model waits at the gate for the next word
            gate.allow()
        assert events(await anext(parts)) == [{"event": "done", "data": '{"words":10}'}]
        assert [part async for part in parts] == []  # the stream ends after `done`


async def test_a_reconnecting_event_source_resumes_after_its_last_event(client: TestClient) -> None:
    expected = markov.words(TOKENS, 8)
    r = await client.get(f"/generate?prompt={PROMPT}&n=8&pace=0", headers={"Last-Event-ID": "4"})
    got = events(r.body)
    assert [(e["id"], e["data"]) for e in got[:-1]] == [(str(i), expected[i]) for i in range(5, 8)]
    assert got[-1]["event"] == "done"


async def test_a_client_that_leaves_cancels_the_model_and_its_slots_come_back(client: TestClient,
                                                                             gate: Gate) -> None:
    async with asyncio.timeout(30):
        gate.allow()
        async with client.stream("GET", f"/generate?prompt={PROMPT}&n=50") as reader:
            parts = aiter(reader)
            await anext(parts)
            gate.allow()
            await anext(parts)
        # left after two words: the model, waiting for its third, sees CancelledError there
        await gate.cancelled.wait()
        assert gate.made == 2
        for _ in range(3):
            gate.allow()
        r = await client.get(f"/generate?prompt={PROMPT}&n=3")  # the same worker, after the END it sent
        assert [e["event"] for e in events(r.body)] == ["word", "word", "word", "done"]
    assert client.pool.in_use() == 0, "the cancelled stream's slots were not all freed"


@pytest.mark.parametrize("query, why", [
    ("prompt=", "say something"),
    ("prompt=!!!", "say something"),  # punctuation only: no token
    ("prompt=alice&n=many", "n must be"),
    ("prompt=alice&n=201", "n must be"),
    ("prompt=alice&pace=-1", "pace must be"),
])
async def test_a_bad_request_is_a_400_from_the_tokenizer_before_any_stream(client: TestClient, query: str,
                                                                           why: str) -> None:
    r = await client.get(f"/generate?{query}")
    assert r.status == 400 and r.headers["content-type"] == "application/json"
    body = orjson.loads(r.body)
    assert why in body["error"] and body["function"] == "prompt"


async def test_the_page_reads_generate_with_an_event_source(client: TestClient) -> None:
    r = await client.get("/")
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    page = r.body.decode()
    assert 'new EventSource("/generate?"' in page and 'addEventListener("done"' in page and "source.close()" in page
