"""What a handler reads from ``ctx`` and sets on it, where a new user trips: repeated query
and form keys, quoted cookies, ``ctx.status``, and results larger than the response limit.

Through ``TestClient``: the real gateway, pool and workers in process.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from spright import App, Context, JSONBytes, MultiDict, PoolConfig
from spright.testing import TestClient


def make_app(pool: PoolConfig | None = None) -> App:
    app = App("ctx", pool=pool)

    @app.function()
    def query(ctx: Context) -> dict[str, Any]:
        return {"last": ctx.query, "all": ctx.query.getlist("tag"), "none": ctx.query.getlist("nope")}

    @app.function()
    def form(ctx: Context) -> dict[str, Any]:
        return {"last": ctx.form(), "all": ctx.form().getlist("tag")}

    @app.function()
    def cookies(ctx: Context) -> dict[str, str]:
        return ctx.cookies

    @app.function()
    def status(ctx: Context) -> dict[str, Any]:
        try:
            ctx.status = ctx.json()
        except (TypeError, ValueError) as exc:
            return {"refused": str(exc)}
        return {"status": ctx.status}

    @app.function()
    def sized(ctx: Context) -> bytes:
        return b"x" * int(ctx.query["n"])

    @app.function()
    def caller(ctx: Context) -> Any:
        return ctx.call("sized", None)  # the callee's result is over the limit: its CallError fails us

    app.route("/query", query)
    app.route("/form", form, methods=["POST"])
    app.route("/cookies", cookies)
    app.route("/status", status, methods=["POST"])
    app.route("/sized", sized, methods=["GET", "POST"])
    app.route("/caller", caller)
    return app


@pytest.fixture
async def client():
    async with TestClient(make_app()) as c:
        yield c


async def test_repeated_query_keys_keep_every_value_in_order(client: TestClient) -> None:
    r = await client.get("/query?tag=b&x=1&tag=a&tag=&x=2")
    assert r.status == 200, r.body
    assert r.json() == {"last": {"tag": "", "x": "2"}, "all": ["b", "a", ""], "none": []}


async def test_repeated_form_keys_keep_every_value_in_order(client: TestClient) -> None:
    r = await client.post("/form", body="tag=b&tag=a&one=1",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status == 200, r.body
    assert r.json() == {"last": {"tag": "a", "one": "1"}, "all": ["b", "a"]}


def test_multidict_is_the_dict_of_last_values() -> None:
    """What existing apps did with ``ctx.query`` (a dict) still works: compare, get, iterate."""
    params = MultiDict.parse("a=1&b=2&a=3")
    assert params == {"a": "3", "b": "2"} and params["a"] == "3" and params.get("c") is None
    assert list(params) == ["a", "b"] and params.getlist("a") == ["1", "3"]
    assert params.multi_items() == [("a", "1"), ("b", "2"), ("a", "3")]


async def test_quoted_cookie_values_are_unquoted(client: TestClient) -> None:
    r = await client.get("/cookies", headers={"cookie": 'plain=p; spaced="x y"; escaped="a\\"b\\073c"; empty='})
    assert r.status == 200, r.body
    assert r.json() == {"plain": "p", "spaced": "x y", "escaped": 'a"b;c', "empty": ""}


@pytest.mark.parametrize(("value", "error"), [
    ("201", "ctx.status must be an int, got '201' (str)"),
    (True, "ctx.status must be an int, got True (bool)"),
    (201.0, "ctx.status must be an int, got 201.0 (float)"),
    (99, "ctx.status must be a final HTTP status, 200..599, got 99"),
    (101, "ctx.status must be a final HTTP status, 200..599, got 101"),
    (600, "ctx.status must be a final HTTP status, 200..599, got 600"),
])
async def test_a_bad_status_is_refused_where_the_handler_sets_it(client: TestClient, value: Any, error: str) -> None:
    r = await client.post("/status", json=value)
    assert r.status == 200 and r.json() == {"refused": error}


@pytest.mark.parametrize("value", [200, 201, 404, 599])
async def test_a_final_status_is_sent(client: TestClient, value: int) -> None:
    r = await client.post("/status", json=value)
    assert r.status == value and r.json() == {"status": value}


def over_the_limit(size: int, limit: int | str) -> str:
    return (f"sized returned {size} bytes, over the response limit of {limit} bytes: raise PoolConfig.max_response "
            f"(e.g. App(pool=PoolConfig(max_response=...)))")


async def test_a_result_no_slot_holds_is_a_500_that_says_what_to_raise() -> None:
    """By default the limit is what the largest slot (max_body + meta_reserve: 8192 bytes
    here) holds beside the metadata: a little more than max_body fits, as it always did."""
    pool = PoolConfig(max_body=4096, classes=((1024, 16),), large_slots=2, meta_reserve=4096)
    async with TestClient(make_app(pool)) as client:
        assert (await client.get("/sized?n=6000")).status == 200
        r = await client.get("/sized?n=9000")
        assert r.status == 500 and r.json()["function"] == "sized"
        limit = re.fullmatch(re.escape(over_the_limit(9000, "@")).replace("@", "([0-9]+)"), r.json()["error"])
        assert limit is not None, r.json()
        assert 8000 < int(limit[1]) < 8192  # the slot, less the request's metadata
        r = await client.get("/caller")  # a callee's result: the caller's CallError names the callee
        assert r.status == 500 and r.json()["function"] == "sized"
        assert client.pool.in_use() == 0


async def test_max_response_is_set_apart_from_the_request_limit() -> None:
    pool = PoolConfig(max_body=4096, max_response=100_000, classes=((1024, 16),), large_slots=2, meta_reserve=4096)
    async with TestClient(make_app(pool)) as client:
        r = await client.get("/sized?n=100000")
        assert r.status == 200 and len(r.body) == 100_000
        assert (await client.post("/sized?n=1", body=b"x" * 4097)).status == 413  # requests: still max_body
        r = await client.get("/sized?n=100001")  # the largest slot would hold it: the limit is exact
        assert r.status == 500 and r.json() == {"function": "sized", "status": 500,
                                                "error": over_the_limit(100_001, 100_000)}


def test_the_largest_slot_holds_the_larger_limit() -> None:
    reserve = PoolConfig().meta_reserve
    assert PoolConfig().size_classes()[-1][0] == PoolConfig().max_body + reserve  # as before
    assert PoolConfig(max_body=1000, max_response=5000).size_classes()[-1][0] == 5000 + reserve
    assert PoolConfig(max_body=5000, max_response=1000).size_classes()[-1][0] == 5000 + reserve


async def test_the_handlers_ctx_shows_no_worker_internals() -> None:
    """What a handler sees is the request and the answer it shapes; the descriptor and the raw
    metadata are the worker's (spright.worker.context's module functions)."""
    app = App("surface")

    @app.function()
    def public(ctx: Context) -> list[str]:
        return sorted(name for name in dir(ctx) if not name.startswith("_"))

    app.route("/", public)
    async with TestClient(app) as client:
        shown = (await client.get("/")).json()
    assert not {"descriptor", "meta", "raw_meta", "response_meta"} & set(shown), shown
    assert {"body", "json", "headers", "call", "set_header", "status", "request_id"} <= set(shown), shown


async def test_json_bytes_leave_as_they_are_marked_json() -> None:
    """``JSONBytes`` is not encoded again (its spacing and key order survive), and it is JSON
    both to the HTTP client and to a caller's ``reply.json()``."""
    app = App("json-bytes")
    kept = JSONBytes(b'{ "b": 1,  "a": [2] }')  # orjson would write {"b":1,"a":[2]}

    @app.function()
    def product(ctx: Context) -> bytes:
        return kept

    @app.function()
    async def caller(ctx: Context) -> dict[str, Any]:
        reply = await ctx.call("product")
        return {"json": reply.json(), "raw": reply.body.decode(), "is_json": reply.is_json}

    app.route("/product", product)
    app.route("/caller", caller)
    async with TestClient(app) as client:
        direct = await client.get("/product")
        called = (await client.get("/caller")).json()
    assert direct.body == kept and direct.headers["content-type"] == "application/json"
    assert called == {"json": {"b": 1, "a": [2]}, "raw": kept.decode(), "is_json": True}
