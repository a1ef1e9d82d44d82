"""HTTP's rules as TestClient shows them, the same as the server does (tests/test_http.py checks
the bytes on every data plane): framing of bodiless answers, percent-decoded paths, response
headers along a chain and what ``set_header`` accepts, the node's config and its limits."""

from __future__ import annotations

import pytest

from spright import App, Config, Context, HTTPError, RoutingError
from spright.data.table import MAX_HOPS
from spright.testing import TestClient
from tests.apps.demo import app as demo


@pytest.fixture
async def client():
    async with TestClient(demo) as c:
        yield c


# -- 1. bodiless answers ----------------------------------------------------------------------
@pytest.mark.parametrize("code", [204, 304])
async def test_a_204_or_304_answer_carries_no_body_whatever_the_handler_returned(client: TestClient,
                                                                                 code: int) -> None:
    response = await client.get(f"/status/{code}")
    assert (response.status, response.body) == (code, b"")


async def test_a_head_answer_has_no_body_and_the_get_headers(client: TestClient) -> None:
    get, head = await client.get("/page"), await client.head("/page")
    assert head.status == get.status == 201 and head.body == b"" and len(get.body) == 50_007
    assert head.headers.getlist("x-page") == ["yes"]


# -- 2. percent-decoded paths -------------------------------------------------------------------
@pytest.mark.parametrize(("target", "item"), [("/info/h%C3%A9llo", "héllo"), ("/info/a%20b", "a b"),
                                              ("/info/h\u00e9llo", "héllo"), ("/%69nfo/x", "x")])
async def test_paths_are_matched_and_handed_on_percent_decoded(client: TestClient, target: str, item: str) -> None:
    """The last two: TestClient encodes what a client would, and an encoded letter still routes."""
    response = await client.get(target)
    assert response.status == 200, response.body
    seen = response.json()
    assert (seen["params"], seen["path"]) == ({"item": item}, f"/info/{item}")


async def test_a_rest_of_path_parameter_gets_an_encoded_slash_decoded(client: TestClient) -> None:
    response = await client.get("/files/a%2Fb%20c")
    assert response.json()["params"] == {"rest": "a/b c"}


async def test_a_path_that_is_not_utf8_once_decoded_is_400(client: TestClient) -> None:
    response = await client.get("/info/%FF")
    assert response.status == 400 and "UTF-8" in response.json()["error"]


# -- 3. headers along a chain ---------------------------------------------------------------------
async def test_headers_accumulate_along_a_chain_and_the_body_type_is_the_last_hops(client: TestClient) -> None:
    """``first`` labels its HTML and sets headers; ``second`` returns JSON and, asked to, sets
    its own: earlier headers are kept, a name set again is replaced, Set-Cookie adds a line."""
    quiet = await client.get("/headers")
    assert quiet.json() == {"second": True}
    assert quiet.headers.getlist("content-type") == ["application/json"]
    assert quiet.headers.getlist("x-first") == ["1"]
    assert quiet.headers.getlist("x-shared") == ["first"]
    assert quiet.headers.getlist("set-cookie") == ["a=1"]
    loud = await client.get("/headers?headers=1")
    assert loud.headers.getlist("content-type") == ["application/json"]
    assert loud.headers.getlist("x-first") == ["1"]
    assert loud.headers.getlist("x-shared") == ["second"]
    assert loud.headers.getlist("set-cookie") == ["a=1", "b=2"]


# -- 4. what set_header accepts -----------------------------------------------------------------
async def test_set_header_of_content_type_sets_the_one_content_type(client: TestClient) -> None:
    response = await client.get("/typed")
    assert response.headers.getlist("content-type") == ["text/csv"]


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("Content-Length", "999", "the server's"), ("transfer-encoding", "chunked", "the server's"),
    ("Connection", "close", "the server's"), ("X Bad", "v", "token"), ("X:Bad", "v", "token"), ("", "v", "token"),
    ("X-Ok", "a\r\nX-Evil: 1", "control"), ("X-Ok", "a\x00", "control"),
])
async def test_set_header_refuses_framing_headers_and_malformed_names_or_values(name: str, value: str,
                                                                                problem: str) -> None:
    app = App("headers")
    seen: list[str] = []

    @app.function()
    async def setter(ctx: Context) -> str:
        try:
            ctx.set_header(name, value)
        except ValueError as exc:
            seen.append(str(exc))
        return "done"

    app.route("/", setter)
    async with TestClient(app) as client:
        response = await client.get("/")
    assert response.status == 200 and len(seen) == 1 and problem in seen[0], seen
    assert response.headers.getlist(name.lower()) == []


async def test_set_header_replaces_a_name_set_twice_but_set_cookie_adds_a_line() -> None:
    app = App("headers")

    @app.function()
    async def setter(ctx: Context) -> str:
        ctx.set_header("X-Once", "1")
        ctx.set_header("x-once", "2")
        ctx.set_header("Set-Cookie", "a=1")
        ctx.set_header("set-cookie", "b=2")
        return "done"

    app.route("/", setter)
    async with TestClient(app) as client:
        response = await client.get("/")
    assert response.headers.getlist("x-once") == ["2"]
    assert response.headers.getlist("set-cookie") == ["a=1", "b=2"]


async def test_a_content_type_with_a_line_break_fails_the_handler_instead_of_splitting_the_response() -> None:
    app = App("headers")

    @app.function()
    async def setter(ctx: Context) -> str:
        ctx.content_type = "text/plain\r\nX-Evil: 1"
        return "done"

    app.route("/", setter)
    async with TestClient(app) as client:
        response = await client.get("/")
    assert response.status == 500 and response.headers.getlist("x-evil") == []


# -- 6. TestClient is the server ------------------------------------------------------------------
async def test_testclient_applies_the_configs_default_timeout() -> None:
    app = App("slow")

    @app.function()
    async def sleeper(ctx: Context) -> str:
        import asyncio

        await asyncio.Event().wait()  # never returns: only the route's timeout ends it
        return "never"

    app.route("/", sleeper)
    async with TestClient(app, config=app.config.replace(default_timeout=0.2)) as client:
        assert client.table.timeouts == (0.2,)
        response = await client.get("/")
    assert response.status == 504


def test_a_chain_over_the_hop_limit_is_refused_at_compile_naming_its_route() -> None:
    app = App("long")
    hops = [app.add_function(lambda ctx: None, name=f"f{i}") for i in range(MAX_HOPS)]
    app.route("/fits", hops[: MAX_HOPS - 1])
    app.compile()  # MAX_HOPS - 1 functions and the gateway: the most every data plane holds
    app.route("/long", hops)
    with pytest.raises(RoutingError, match=r"route GET /long: the chain has 32 hops; a chain holds at most 31"):
        app.compile()


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), "5"])
def test_a_route_timeout_that_is_not_a_positive_number_is_refused(timeout: object) -> None:
    app = App("t")
    app.add_function(lambda ctx: None, name="f")
    with pytest.raises(RoutingError, match=r"route /x: timeout must be a positive number of seconds"):
        app.route("/x", "f", timeout=timeout)  # type: ignore[arg-type]


def test_config_default_timeout_applies_to_routes_without_one() -> None:
    app = App("t", config=Config(default_timeout=7.0))
    app.add_function(lambda ctx: None, name="f")
    app.route("/a", "f")
    app.route("/b", "f", timeout=2.0)
    assert [r.timeout for r in app.compile().routes[:2]] == [7.0, 2.0]
    assert [r.timeout for r in app.compile(default_timeout=3.0).routes[:2]] == [3.0, 2.0]


# -- 8. redirects -----------------------------------------------------------------------------------
async def test_ctx_redirect_answers_its_status_and_location_and_httperror_3xx_says_how() -> None:
    app = App("redirects")
    refused: list[str] = []

    @app.function()
    async def login(ctx: Context) -> None:
        for wrong in (lambda: HTTPError(302, "moved"), lambda: ctx.redirect("/x", 200)):
            try:
                wrong()
            except ValueError as exc:
                refused.append(str(exc))
        return ctx.redirect("/login?next=%2Fcart", 303)

    app.route("/cart", login)
    async with TestClient(app) as client:
        response = await client.get("/cart")
    assert (response.status, response.headers.getlist("location")) == (303, ["/login?next=%2Fcart"])
    assert "ctx.redirect" in refused[0] and "300..399" in refused[1], refused


@pytest.mark.parametrize("field", ["max_pipelined", "max_connections", "max_in_flight"])
def test_the_http_limits_are_config_fields_checked_where_set(field: str) -> None:
    with pytest.raises(ValueError, match=f"Config.{field} must be >= 1"):
        Config(**{field: 0})
    assert getattr(Config(**{field: 3}), field) == 3
