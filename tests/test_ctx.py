"""What a handler reads from ``ctx`` and sets on it, where a new user trips: repeated query
and form keys, quoted cookies, ``ctx.status``, and results larger than the response limit.

Through ``TestClient``: the real gateway, pool and workers in process.
"""

from __future__ import annotations

from typing import Any

import pytest

from spright import App, Context, MultiDict, PoolConfig
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
