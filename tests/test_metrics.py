"""Userspace counters, latency histograms and ``/metrics``: in-process and on a real node."""

import signal
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from spright import App, Context
from spright.host.counters import BUCKETS, ROW_WORDS, CounterTable, read_segments
from spright.testing import TestClient, run_node
from tests.apps.demo import app as demo
from tests.kit.nodes import node_file


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(family, suffix: str = "", **labels: str) -> float:
    """The value of the one sample of ``family`` whose labels include ``labels``."""
    found = [s.value for s in family.samples
             if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family.name, suffix, labels, found)
    return found[0]


def test_counter_table_rows_are_shared_and_unlinked_on_close() -> None:
    layout = {0: (0, 4), 1: (1, 3), 2: (2,)}  # the gateways' domain, then two function domains
    table = CounterTable.create(layout, extra_words=3)
    names = table.names
    assert len(set(names.values())) == 3, "a segment per security domain"
    assert all(Path("/dev/shm", name).stat().st_mode & 0o777 == 0o600 for name in names.values())
    other = CounterTable.attach(layout, {1: names[1]})  # a worker of domain 1: its own domain's segment only
    other.row(3)[1] += 7  # a worker writes its row ...
    assert table.read()[3][1] == 7  # ... the gateway sees it
    assert other.read()[2] == [0] * ROW_WORDS and len(other.extra) == 0, "it sees nothing of another domain"
    for endpoint in (0, 2, 4):
        try:
            other.row(endpoint)
        except KeyError:
            continue
        raise AssertionError(f"a worker of domain 1 holds endpoint {endpoint}'s row")
    table.row(4)[0], table.extra[2] = 5, 9  # a further gateway's row; the histograms' words
    rows = read_segments(table.segments(), table.rows)  # and another process reads every domain's
    assert rows[3][:2] == [0, 7] and rows[4][0] == 5 and len(rows) == 5 and len(rows[0]) == ROW_WORDS
    gateway = CounterTable.attach(layout, names)  # a further gateway: every domain's
    assert gateway.extra[2] == 9 and gateway.read() == table.read(), "the histograms live in the gateways' segment"
    gateway.close()
    other.close()
    assert all(Path("/dev/shm", name).exists() for name in names.values()), "only the creator unlinks"
    table.close()
    assert not any(Path("/dev/shm", name).exists() for name in names.values())


async def test_counters_through_testclient_match_requests() -> None:
    async with TestClient(demo) as client:
        for _ in range(5):
            assert (await client.post("/echo", body=b"abc")).status == 200
        for _ in range(3):
            assert (await client.post("/total", json=[[1, 2], [3]])).status == 200
        assert (await client.get("/boom")).status == 500
        assert (await client.get("/nowhere")).status == 404
        upper, tag = client.counters_of("upper"), client.counters_of("tag")
        assert (upper["descriptors_in"], upper["descriptors_out"], upper["payload_bytes"]) == (5, 5, 15)
        assert (tag["descriptors_in"], tag["descriptors_out"]) == (10, 10)  # tag runs twice per request
        assert tag["payload_bytes"] == 5 * 3 + 5 * 4  # "ABC", then "ABC!"
        total, adder = client.counters_of("total"), client.counters_of("adder")
        assert total["calls"] == 6 and adder["descriptors_in"] == 6 and adder["calls"] == 0
        assert total["descriptors_in"] == 3 + 6  # 3 requests, 6 replies to its calls
        assert client.counters_of("boom")["handler_errors"] == 1
        assert (upper["handled"], tag["handled"], adder["handled"], total["handled"]) == (5, 10, 6, 3)
        assert client.counters_of("boom")["handled"] == 1  # a run that raised is still a run
        gateway = client.counters_of("gateway")
        assert gateway["requests"] == 10 and gateway["descriptors_out"] == 9
        assert (gateway["responses_2xx"], gateway["responses_4xx"], gateway["responses_5xx"]) == (8, 1, 1)


async def test_metrics_endpoint_in_process_has_counters_gauges_and_histograms() -> None:
    async with TestClient(demo) as client:
        for _ in range(4):
            await client.post("/echo", body=b"x")
        await client.get("/boom")
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = families(response.text)
    assert sample(found["spright_descriptors_in"], "_total", function="upper", domain="demo") == 4
    assert sample(found["spright_handler_errors"], "_total", function="boom") == 1
    assert sample(found["spright_handled"], "_total", function="upper") == 4
    assert sample(found["spright_handler_seconds"], "_total", function="upper") > 0
    assert sample(found["spright_responses"], "_total", status="5xx") == 1
    assert sample(found["spright_requests_in_flight"]) == 0  # /metrics itself never goes down a chain
    latency = found["spright_request_duration_seconds"]
    assert sample(latency, "_count", method="POST", route="/echo", status="2xx") == 4
    assert sample(latency, "_bucket", method="POST", route="/echo", status="2xx", le="+Inf") == 4
    assert sample(latency, "_count", method="GET", route="/boom", status="5xx") == 1
    buckets = [s for s in latency.samples if s.name.endswith("_bucket") and s.labels["route"] == "/echo"]
    assert len(buckets) == len(BUCKETS) + 1
    assert [s.value for s in buckets] == sorted(s.value for s in buckets), "cumulative"
    assert "spright_pool_slots_in_use" in found and "spright_pool_slots" in found


async def test_handler_time_includes_what_the_handler_awaits() -> None:
    async with TestClient(demo) as client:
        assert (await client.get("/sleep?s=0.1")).status == 200
        sleepy = client.counters_of("sleepy")
    assert sleepy["handled"] == 1 and 0.1e9 <= sleepy["handler_ns"] < 5e9


async def test_an_app_that_routes_get_metrics_keeps_its_route() -> None:
    mine = App("own-metrics")

    @mine.function()
    async def metrics(ctx: Context) -> str:
        return "my own metrics"

    mine.route("/metrics", metrics, methods=["GET"])
    async with TestClient(mine) as client:
        assert (await client.get("/metrics")).text == "my own metrics"
        assert (await client.post("/metrics")).status == 405


async def test_metrics_on_a_real_node(transport: str, runtime_dir: Path) -> None:
    n = 50
    with run_node("examples.echo:app", transport=transport) as (port, _):
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for i in range(n):
                async with session.post(f"{url}/echo", data=b"x" * i) as r:
                    assert r.status == 200
            async with session.get(f"{url}/metrics") as r:
                assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
                found = families(await r.text())
    latency = found["spright_request_duration_seconds"]
    assert sample(latency, "_count", method="POST", route="/echo", status="2xx") == n
    assert 0 < sample(latency, "_sum", method="POST", route="/echo", status="2xx") < n * 5.0
    for function in ("parse", "enrich", "reply"):  # written by three other processes
        assert sample(found["spright_descriptors_in"], "_total", function=function, domain="echo") == n
        assert sample(found["spright_descriptors_out"], "_total", function=function) == n
        assert sample(found["spright_payload_bytes"], "_total", function=function) == n * (n - 1) // 2
    assert sample(found["spright_requests"], "_total") == n  # this /metrics request counts once answered
    assert sample(found["spright_responses"], "_total", status="2xx") == n
    assert sample(found["spright_requests_in_flight"]) == 0
    assert sample(found["spright_pool_slots_in_use"]) == 0
    if transport == "skmsg":  # the kernel's own count of what it redirected agrees
        for function in ("parse", "enrich", "reply"):
            assert sample(found["spright_kernel_received"], "_total", function=function) == n
            assert sample(found["spright_kernel_sent"], "_total", function=function) == n + 1  # + its READY
            assert sample(found["spright_kernel_bytes_received"], "_total", function=function) == n * (n - 1) // 2
        assert sample(found["spright_kernel_domain_drops"], "_total", function="parse") == 0


def test_counter_segment_is_gone_after_sigterm(transport: str, runtime_dir: Path) -> None:
    with run_node("examples.echo:app", transport=transport) as (_, process):
        segments = [Path("/dev/shm", name) for name in node_file(process.pid).metrics.segments]
        assert segments and all(s.exists() and s.stat().st_mode & 0o777 == 0o600 for s in segments)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert not any(segment.exists() for segment in segments)
    assert not (runtime_dir / str(process.pid)).exists()
