import asyncio

import pytest

from spright import Config, PoolConfig
from spright.data.descriptor import GATEWAY, RESPONSE, Descriptor
from spright.host.counters import ERRORS, HANDLED, histogram_words
from spright.testing import TEST_POOL, TestClient
from tests.apps.demo import app


@pytest.fixture
async def client():
    async with TestClient(app) as c:
        yield c
        await asyncio.sleep(0)
        assert c.pool.in_use() == 0, "every slot comes back when its request ends"


async def test_chain_runs_in_order_in_place(client: TestClient) -> None:
    r = await client.post("/echo", body=b"hello")
    assert r.status == 200 and r.body == b"HELLO!!"
    assert r.headers["content-type"] == "application/octet-stream"


async def test_request_metadata_reaches_the_handler(client: TestClient) -> None:
    r = await client.get("/info/abc?x=1&y=two", headers={"User-Agent": "pytest", "Cookie": "session=s1; a=b"})
    assert r.status == 200
    request_id = r.json().pop("request_id")
    assert r.json() == {
        "method": "GET", "path": "/info/abc", "params": {"item": "abc"}, "query": {"x": "1", "y": "two"},
        "agent": "pytest", "session": "s1", "request_id": request_id,
    }
    again = (await client.get("/info/abc")).json()["request_id"]
    assert isinstance(request_id, int) and 0 < request_id != again, "each request has an id of its own"
    assert r.headers["content-type"] == "application/json"


async def test_response_larger_than_request_with_status_and_headers(client: TestClient) -> None:
    r = await client.get("/page")
    assert r.status == 201 and len(r.body) == 50_007
    assert r.headers["content-type"] == "text/html; charset=utf-8" and r.headers["x-page"] == "yes"
    assert r.raw_headers[0] == (b"content-type", b"text/html; charset=utf-8")  # as the server sends them


async def test_growth_mid_chain_moves_to_a_bigger_slot(client: TestClient) -> None:
    r = await client.post("/grow?times=300", body=b"ab" * 100)
    assert r.status == 200 and r.body == b"AB" * 30_000


async def test_concurrent_internal_calls(client: TestClient) -> None:
    r = await client.post("/total", json=[[1, 2, 3], [10, 20]])
    assert r.status == 200 and r.json() == {"total": 36}


async def test_many_concurrent_requests(client: TestClient) -> None:
    responses = await asyncio.gather(*(client.post("/echo", body=f"m{i}") for i in range(80)))
    assert [r.body for r in responses] == [f"M{i}!!".encode() for i in range(80)]


async def test_http_error_from_a_handler(client: TestClient) -> None:
    r = await client.post("/add", json={"not": "a list"})
    assert r.status == 400
    assert r.json() == {"error": "expected a JSON list of numbers", "status": 400, "function": "adder"}
    r = await client.post("/add", body=b"{nope")
    assert r.status == 400 and "not valid JSON" in r.json()["error"]


async def test_exception_is_a_500_with_an_error_id_and_the_worker_lives(client: TestClient) -> None:
    r = await client.get("/boom")
    assert r.status == 500
    body = r.json()
    assert body["error"] == "internal server error" and len(body["error_id"]) == 12 and body["function"] == "boom"
    assert (await client.post("/echo", body=b"ok")).body == b"OK!!"


async def test_callee_failure_propagates_its_status(client: TestClient) -> None:
    r = await client.request("PUT", "/call-boom", json=[[1], "oops"])
    assert r.status == 400 and r.json()["function"] == "adder", "the failing callee is named, not the caller"
    assert r.json()["error"].startswith("body is not valid JSON")


async def test_not_found_and_method_not_allowed(client: TestClient) -> None:
    assert (await client.get("/nowhere")).status == 404
    r = await client.request("DELETE", "/echo")
    assert r.status == 405 and r.headers["allow"] == "POST"


async def until_no_slot_in_use(client: TestClient) -> None:
    async with asyncio.timeout(5):
        while client.pool.in_use():
            await asyncio.sleep(0.01)


async def test_chain_timeout_is_504_and_the_late_reply_is_reclaimed(client: TestClient) -> None:
    r = await client.get("/sleep?s=0.8")
    assert r.status == 504
    await until_no_slot_in_use(client)  # its slot must be freed, not leaked


async def test_a_handler_past_its_chain_timeout_is_cancelled_and_frees_its_place(client: TestClient) -> None:
    hung = await client.get("/stuck?hang=1")  # the function's only place (concurrency=1)
    assert hung.status == 504
    r = await client.get("/stuck")  # queued behind the hung handler until it is cancelled
    assert r.status == 200 and r.text == "free"
    row = client.counters.row(client.table.function_id("stuck"))
    assert row[ERRORS] == 1 and row[HANDLED] == 2


async def test_an_answer_naming_a_stale_slot_fails_the_request_instead_of_hanging(client: TestClient) -> None:
    waiting = asyncio.create_task(client.get("/sleep?s=0.2"))
    while not client.gateway.pending:
        await asyncio.sleep(0.01)
    (request_id,) = client.gateway.pending
    forged = Descriptor(GATEWAY, 1, RESPONSE, 1, 0, 200, 0, 0, request_id, 0, 0xFFFF)  # no slot has it
    client.gateway.receive(forged.pack())
    r = await asyncio.wait_for(waiting, 5)  # a 502, not the real answer's 200 at 0.2 s
    assert r.status == 502 and r.json()["error"] == "the chain's answer was lost"
    await until_no_slot_in_use(client)  # the real answer arrives late: its slot is reclaimed


async def test_body_over_the_limit_is_413() -> None:
    async with TestClient(app, config=Config(pool=TEST_POOL).replace(max_body=1000)) as client:
        assert (await client.post("/echo", body=b"x" * 1001)).status == 413
        assert (await client.post("/echo", body=b"x" * 1000)).status == 200


async def test_pool_exhaustion_is_503_with_retry_after() -> None:
    tiny = PoolConfig(max_body=4096, classes=((1024, 3),), large_slots=1, meta_reserve=1024)
    async with TestClient(app, config=Config(pool=tiny)) as client:
        responses = await asyncio.gather(*(client.get("/sleep?s=0.2") for _ in range(8)))
        statuses = sorted(r.status for r in responses)
        assert statuses.count(200) == 4 and statuses.count(503) == 4
        refused = next(r for r in responses if r.status == 503)
        assert refused.headers["retry-after"] == "1"
        assert client.pool.in_use() == 0


async def test_invalid_utf8_and_json_are_400s_that_say_what_is_wrong() -> None:
    from spright import App

    strict = App("strict")
    strict.route("/text", strict.add_function(lambda ctx: ctx.text(), name="text"), methods=["POST"])
    strict.route("/form", strict.add_function(lambda ctx: ctx.form(), name="form"), methods=["POST"])
    strict.route("/json", strict.add_function(lambda ctx: ctx.json(), name="json"), methods=["POST"])
    async with TestClient(strict) as client:
        for path in ("/text", "/form"):
            r = await client.post(path, body=b"caf\xe9")
            assert r.status == 400 and "not valid UTF-8" in r.json()["error"], (path, r.body)
        r = await client.post("/json", body=b'{"a": ')
        assert r.status == 400 and "not valid JSON" in r.json()["error"]
        assert (await client.post("/text", body="café".encode())).body == "café".encode()


async def test_testclient_assembles_its_node_as_spright_run_does(client: TestClient) -> None:
    """One assembly (spright.node.assembly) for every kind of node: TestClient's counter table
    used to have no room for the gateways' latency histograms, so /metrics took another path."""
    assert len(client.counters.extra) == histogram_words(client.table) > 0
    assert (await client.get("/info/x")).status == 200
    client.gateway.metrics.publish()  # what the gateway's tick does
    assert any(client.counters.extra), "the request's latency is published where a node's readers find it"
