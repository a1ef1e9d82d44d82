"""Admission control (issue 27): past ``Config.max_in_flight`` requests down the chains, a new
one is answered 503 with ``Retry-After: 1`` at once, its connection kept, while the admitted
ones complete; once they have, every request is served, the refusals are counted in
``/metrics`` and no slot is left taken. Plus bench.overload's code paths at a tiny size."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from pathlib import Path

import pytest

from spright import App, Config, Context
from spright.front.incoming import in_flight_bound
from spright.host.nodefile import DATA_DIR, runtime_base
from spright.testing import TestClient, node_metric, run_node

BOUND = 4


class Gate:
    """Holds the slow handler's runs until the test opens it; tells the test once BOUND are in."""

    entered = 0
    all_in: asyncio.Event
    open: asyncio.Event


app = App("overload", config=Config(max_in_flight=BOUND))


@app.function()
async def slow(ctx: Context) -> bytes:
    Gate.entered += 1
    if Gate.entered == BOUND:
        Gate.all_in.set()
    await Gate.open.wait()
    return b"slow"


app.route("/slow", slow)


async def test_requests_past_the_bound_get_503_at_once_and_the_admitted_complete() -> None:
    Gate.entered, Gate.all_in, Gate.open = 0, asyncio.Event(), asyncio.Event()
    async with TestClient(app) as client:
        admitted = [asyncio.ensure_future(client.get("/slow")) for _ in range(BOUND)]
        await Gate.all_in.wait()  # the bound is full: BOUND handlers are running
        assert client.gateway.in_flight == BOUND
        refused = [await client.get("/slow") for _ in range(3)]  # answered while the gate is shut
        for response in refused:
            assert response.status == 503 and response.headers["retry-after"] == "1", response
        assert not any(task.done() for task in admitted)
        Gate.open.set()
        assert [(r.status, r.body) for r in await asyncio.gather(*admitted)] == [(200, b"slow")] * BOUND
        for _ in range(2):  # the burst is over: every request within the bound is served
            after = await asyncio.gather(*(client.get("/slow") for _ in range(BOUND)))
            assert [r.status for r in after] == [200] * BOUND
        page = (await client.get("/metrics")).body.decode()  # a built-in page: never refused
        assert 'spright_requests_refused_total{reason="in_flight"} 3.0' in page
        assert 'spright_requests_refused_total{reason="connections"} 0.0' in page
        assert client.gateway.pool.in_use() == 0 and client.gateway.in_flight == 0


def test_the_default_bound_is_ten_times_the_entry_functions_concurrency_within_the_pool() -> None:
    mine = App("bound")
    first = mine.add_function(slow, name="first", concurrency=10)
    mine.add_function(slow, name="second", concurrency=1000)  # only called: not an entry
    mine.route("/a", first)
    assert in_flight_bound(mine.compile(), 10_000) == 100  # Knative's queue depth: 10x
    assert in_flight_bound(mine.compile(), 8) == 8  # the pool's slots
    assert in_flight_bound(mine.compile(gateways=2), 10_000) == 50  # shared among the gateway processes


@pytest.mark.node
def test_a_real_node_refuses_past_the_bound_keeps_the_connection_and_serves_after(
        runtime_dir: Path) -> None:
    with run_node("tests.apps.overload:app") as (port, process):  # max_in_flight=2, one gateway
        release = runtime_base() / str(process.pid) / DATA_DIR / "release"  # where the workers may look
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for sock in held:
            sock.sendall(f"GET /hold?until={release} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + 30
        while node_metric(port, "spright_requests_in_flight") < 2:  # both are down their chain
            assert time.monotonic() < deadline
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(3):  # one keep-alive connection: each 503 leaves it open for the next request
            connection.request("POST", "/echo", b"x" * 5000)  # a body, read and dropped
            reply = connection.getresponse()
            assert (reply.status, reply.getheader("retry-after")) == (503, "1")
            assert reply.getheader("connection") is None and b"in flight" in reply.read()
        release.touch()
        for sock in held:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 "), "an admitted request was not served"
            sock.close()
        connection.request("POST", "/echo", b"ping")  # the same connection, served now
        reply = connection.getresponse()
        assert (reply.status, reply.read()) == (200, b"ping")
        connection.close()
        assert node_metric(port, 'spright_requests_refused_total{reason="in_flight"}') == 3
        deadline = time.monotonic() + 30
        while node_metric(port, "spright_pool_slots_in_use") and time.monotonic() < deadline:
            pass
        assert node_metric(port, "spright_pool_slots_in_use") == 0


# -- bench.overload's code paths at a tiny size (its figures come from `python -m bench.overload`) --
def test_the_bench_summary_reads_goodput_refusals_and_recovery() -> None:
    from bench import overload

    # 1 s of overload (10 due: 6 served in 5 ms, 4 refused), then 1 s quiet: slow at first, then back
    offsets = [i / 10 for i in range(10)] + [1 + i / 10 for i in range(10)]
    status = [200] * 6 + [503] * 4 + [200] * 10
    latency = [5_000_000] * 6 + [100_000] * 4 + [50_000_000] * 5 + [1_000_000] * 5
    out = {"offsets": offsets, "status": status, "latency_ns": latency, "connections": 3, "errors": []}
    figures = overload.summarise(out, 0.0, 1.0, unloaded_p99_ms=1.0, saturated_rps=6.0)
    assert (figures["offered"], figures["ok"], figures["refused_503"], figures["other"]) == (10, 6, 4, 0)
    assert (figures["goodput_share"], figures["refused_share"]) == (1.0, 0.4)
    assert figures["admitted_latency"]["p99_ms"] == 5.0
    assert figures["after_drop_p99_ms"] == [(0.0, 50.0), (0.5, 1.0)]
    assert (figures["recovery_s"], figures["later_windows_over"]) == (0.5, 0)
    report = {"runs": [{"factor": 2.0, **figures}], "pool_slots_in_use_after": 0.0}
    assert all(overload.verdict(report).values())


def test_the_bench_generator_keeps_each_status_against_a_refusing_server() -> None:
    from bench import overload
    from bench.raw_server import HelloProtocol

    class Refusing(HelloProtocol):
        """Answers every other request 503, the way an overloaded node refuses."""

        answered = 0

        def on_message_complete(self) -> None:
            Refusing.answered += 1
            if Refusing.answered % 2:
                super().on_message_complete()
            elif self.transport is not None:
                self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n")

    async def against() -> dict:
        server = await asyncio.get_running_loop().create_server(Refusing, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await overload.phases(f"http://127.0.0.1:{port}", "/", [(200, 0.2), (100, 0.2)], connections=2)

    import uvloop

    out = uvloop.run(against())
    assert out["sent"] == len(out["offsets"]) and 50 < len(out["offsets"]) <= 60  # 0.2 s at 200/s, 0.2 s at 100/s
    assert sorted(set(out["status"])) == [200, 503] and out["status"].count(503) == len(out["offsets"]) // 2
    assert all(out["latency_ns"])
