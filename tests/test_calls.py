"""``ctx.call``'s edge cases (issue 21, item 7) and the one shape of an error body (item 8)."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from spright import App, CallError, Context, HTTPError
from spright.host.counters import IN_FLIGHT
from spright.testing import TestClient

app = App("calls")


@app.function()
async def to_nowhere(ctx: Context) -> dict:
    try:
        await ctx.call("nope")
    except CallError as exc:
        return {"status": exc.status, "detail": exc.detail, "function": exc.function}
    return {}


@app.function(concurrency=2)
async def recurse(ctx: Context) -> int:
    """``levels`` handlers of ``recurse``, each calling the next: the innermost answers 1."""
    levels = ctx.json()
    return 1 + (await ctx.call("recurse", levels - 1)).json() if levels > 1 else 1


@app.function()
async def breaks(ctx: Context) -> None:
    raise RuntimeError("the callee broke")


@app.function()
async def calls_breaks(ctx: Context) -> dict:
    if ctx.query.get("catch"):
        try:
            await ctx.call("breaks")
        except CallError as exc:
            return {"status": exc.status, "function": exc.function, "error_id": exc.error_id}
    await ctx.call("breaks")  # unhandled: fails this caller with the callee's failure
    return {}


@app.function()
async def refuses(ctx: Context) -> None:
    raise HTTPError(409, "not now")


entered, hung = asyncio.Event(), asyncio.Event()


@app.function(instances=2)
async def fragile(ctx: Context) -> str:
    entered.set()  # its slot is held: the gateway knows what this instance was doing
    await hung.wait()  # until the test lets it go (its worker "crashes" meanwhile)
    return "late"


app.route("/nowhere", to_nowhere)
app.route("/recurse", recurse, methods=["POST"], timeout=2)
app.route("/calls-breaks", calls_breaks)
app.route("/breaks", breaks)
app.route("/refuses", refuses)
app.route("/fragile", fragile)


@pytest.fixture
async def client():
    async with TestClient(app) as c:
        yield c


async def test_a_call_to_no_such_function_is_a_call_error_404_naming_it(client: TestClient) -> None:
    r = await client.get("/nowhere")
    assert r.json() == {"status": 404, "detail": "no function named 'nope'", "function": "nope"}


async def test_a_self_call_deeper_than_the_concurrency_is_refused_at_once_with_508(client: TestClient) -> None:
    """concurrency=2: two levels of ``recurse`` hold both places, so a third could never run;
    it is refused at once (before: a 504 at the route's timeout, the places held meanwhile)."""
    r = await client.post("/recurse", json=3)
    assert r.status == 508, (r.status, r.body)
    body = r.json()
    assert body["status"] == 508 and body["function"] == "recurse"
    assert "'recurse'" in body["error"] and "concurrency=2" in body["error"] and "recurse less deep" in body["error"]
    for levels in (2, 1):  # within the bound; and no place was lost to the refused call
        r = await client.post("/recurse", json=levels)
        assert (r.status, r.json()) == (200, levels)
    assert next(w for w in client.workers if w.function.name == "recurse").counters[IN_FLIGHT] == 0


async def test_a_callees_unexpected_exception_reaches_the_client_with_its_error_id(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="spright.worker"):
        r = await client.get("/calls-breaks")
    (logged,) = re.findall(r"breaks failed \(error_id=(\w+)\)", caplog.text)
    assert r.status == 500
    assert r.json() == {"error": "internal server error", "status": 500, "function": "breaks", "error_id": logged}
    caught = (await client.get("/calls-breaks?catch=1")).json()
    assert caught["status"] == 500 and caught["function"] == "breaks" and len(caught["error_id"]) == 12


async def test_every_error_body_has_one_shape(client: TestClient) -> None:
    """``error`` and ``status`` always; ``function`` where a function failed; ``error_id`` for
    an unexpected exception."""
    r = await client.get("/refuses")
    assert (r.status, r.json()) == (409, {"error": "not now", "status": 409, "function": "refuses"})
    r = await client.get("/breaks")
    assert r.status == 500 and set(r.json()) == {"error", "status", "function", "error_id"}
    r = await client.get("/no-such-path")
    assert (r.status, r.json()) == (404, {"error": "no route for /no-such-path", "status": 404})


async def test_a_crashed_instance_answers_its_requests_in_the_one_shape(client: TestClient) -> None:
    """The gateway's own answers for a crash: the held requests of an instance that died while
    another serves, then those of the function's last instance."""
    instances = set(client.table.instance_endpoints(client.table.function_id("fragile"))[:2])
    crashed = {"error": "function 'fragile' crashed", "status": 502, "function": "fragile"}
    try:
        for _ in range(len(instances)):  # the first dies while the other serves; then the last
            entered.clear()
            waiting = asyncio.ensure_future(client.get("/fragile"))
            await entered.wait()
            (busy,) = (w.id for w in client.workers if w.id in instances and w.counters[IN_FLIGHT])
            client.coordinator.members.exited(busy)
            instances.discard(busy)
            r = await waiting
            assert (r.status, r.json()) == (502, crashed)
    finally:
        hung.set()


async def test_a_reply_reads_as_a_response_does() -> None:
    """One convention for bodies (Starlette's and httpx's): ``.text`` a property, ``.json()`` a
    method, on a call's Reply as on TestClient's Response."""
    app = App("replies")

    @app.function()
    async def callee(ctx: Context) -> str:
        return "héllo"

    @app.function()
    async def caller(ctx: Context) -> dict:
        reply = await ctx.call("callee")
        return {"text": reply.text, "body": reply.body.decode()}

    app.route("/", caller)
    async with TestClient(app) as client:
        response = await client.get("/")
    assert response.json() == {"text": "héllo", "body": "héllo"} and response.text == response.body.decode()
