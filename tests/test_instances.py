"""Several instances of a function: the data plane spreads requests and calls over them, the
answer of a call goes back to the instance that called, and a stateful function refuses more
than one instance. The same checks run in process and on real nodes."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from spright import App, RoutingError
from spright.host.counters import HANDLED
from spright.host.nodefile import runtime_base
from spright.node import control
from spright.ops.nodes import choose_node
from spright.testing import TestClient, run_node
from tests.apps.instances import app
from tests.kit.nodes import serving


def check_balance(pids: list[int], instances: int) -> None:
    """Every instance served, none starved: at least half its fair share. (skmsg's kernel picks
    per run of descriptors and keeps a turn per CPU, so a batch goes to one instance.)"""
    counts = collections.Counter(pids)
    assert len(counts) == instances, counts
    assert min(counts.values()) >= len(pids) / instances / 2, f"an instance starved: {counts}"


async def test_in_process_requests_and_calls_spread_over_instances() -> None:
    async with TestClient(app) as client:
        who = client.table.functions[client.table.function_id("who") - 1]
        assert who.instances == 3 and client.table.max_instances(who.id) == 4, "one set aside"
        answers = [await client.get("/who") for _ in range(60)]
        assert client.counters_of("who")["handled"] == 60, "the function's row adds its instances up"
        per_instance = [client.gateway.metrics.rows()[e][HANDLED] for e in client.table.slot_endpoints(who.id, 0)]
        assert per_instance == [20, 20, 20, 0], "round robin over the three live ones, none for the spare"
        assert all(a.status == 200 for a in answers)
        asked = [await client.get("/ask") for _ in range(40)]
        assert all(a.status == 200 for a in asked)
        rows = client.gateway.metrics.rows()
        askers = [rows[e][HANDLED] for e in client.table.slot_endpoints(client.table.function_id("asker"), 0)]
        assert askers == [20, 20], "requests to asker take turns over its two instances"
        endpoints = client.table.slot_endpoints(who.id, 0)
        called = [rows[e][HANDLED] - n for e, n in zip(endpoints, per_instance, strict=True)]
        assert sum(called) == 40 and all(n >= 10 for n in called[:3]) and called[3] == 0, (
            f"its 40 calls spread over who's three live instances, none to the spare: {called}")


@pytest.mark.node
async def test_on_a_node_each_instance_is_a_process_and_replies_reach_their_caller(transport: str,
                                                                                 runtime_dir: Path) -> None:
    with run_node("tests.apps.instances:app", transport=transport) as (port, _):
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async def get(path: str) -> dict:
                async with session.get(path) as reply:
                    assert reply.status == 200, await reply.text()
                    return await reply.json()

            who = await asyncio.gather(*(get("/who") for _ in range(300)))
            check_balance([w["pid"] for w in who], 3)
            asked = await asyncio.gather(*(get("/ask") for _ in range(300)))
            check_balance([a["asker"] for a in asked], 2)
            check_balance([a["who"] for a in asked], 3)
            # every call's answer reached the asker that made it: none timed out, none went astray
            async with session.get("/metrics") as reply:
                text = await reply.text()
            assert 'spright_instances{domain="instances",function="who"} 3.0' in text
            assert 'spright_handled_total{domain="instances",function="who"} 600.0' in text


@pytest.mark.node
@pytest.mark.parametrize("plane", [pytest.param("skmsg", marks=pytest.mark.kernel), "unix"])
@pytest.mark.parametrize("balance", ["least_in_flight", "round_robin"])
async def test_least_in_flight_sends_nothing_to_a_busy_instance(plane: str, balance: str, runtime_dir: Path) -> None:
    """One instance holds a request for 2 s; twenty requests, one after the other, follow.
    Least in flight sends all of them to the idle instance; round robin splits them."""
    with run_node("tests.apps.instances:app", transport=plane, args=("--balance", balance)) as (port, _):
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async def post(body: bytes) -> int:
                async with session.post("/hold", data=body) as reply:
                    assert reply.status == 200, await reply.text()
                    return int((await reply.json())["pid"])

            await asyncio.gather(*(post(b"warm") for _ in range(8)))  # both instances have served
            held = asyncio.create_task(post(b"hold"))
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # until the gateway has sent it on
                async with session.get("/metrics") as reply:
                    if "\nspright_requests_in_flight 1.0\n" in await reply.text():
                        break
                assert asyncio.get_running_loop().time() < deadline, "the held request never left the gateway"
            quick = collections.Counter([await post(b"quick") for _ in range(20)])
            busy = await held
    if balance == "least_in_flight":
        assert busy not in quick and sum(quick.values()) == 20, quick
    else:
        assert quick[busy] >= 5 and len(quick) == 2, quick


@pytest.mark.node
@pytest.mark.parametrize("plane", [pytest.param("skmsg", marks=pytest.mark.kernel), "unix"])
async def test_a_crashed_instance_costs_its_own_requests_a_prompt_502(plane: str, runtime_dir: Path) -> None:
    """An instance dies mid-handler while the other serves: the request it was running is
    answered 502 at once (not at the route's 10 s timeout); the others are served."""
    with run_node("tests.apps.instances:app", transport=plane) as (port, _):
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async def post(body: bytes) -> tuple[int, dict]:
                async with session.post("/fragile", data=body) as reply:
                    return reply.status, await reply.json()

            started = asyncio.get_running_loop().time()
            dying = asyncio.create_task(post(b"die"))
            others = await asyncio.gather(*(post(b"live") for _ in range(20)))
            status, body = await dying
            took = asyncio.get_running_loop().time() - started
    # the crash's 502, not the route timeout's 504: nobody waited for the timeout
    assert status == 502 and body["error"] == "function 'fragile' crashed", (status, body, took)
    assert all(s == 200 for s, _ in others), others


def test_a_stateful_function_runs_as_one_instance() -> None:
    with pytest.raises(RoutingError, match=r"function 'cart' is stateful .* one instance, not 2"):
        app.compile({"cart": 2})
    solo = App("solo")
    with pytest.raises(RoutingError, match=r"stateful .* not 3"):
        solo.add_function(lambda ctx: None, name="cart", stateful=True, instances=3)


def test_instances_must_name_a_function_and_a_lone_process() -> None:
    with pytest.raises(RoutingError, match="--instances names no function of app 'instances': nope"):
        app.compile({"nope": 2})
    shared = App("shared")
    shared.add_function(lambda ctx: None, name="a", process="p")
    shared.add_function(lambda ctx: None, name="b", process="p")
    shared.route("/a", "a")
    with pytest.raises(RoutingError, match="function 'a' shares process 'p' with other functions"):
        shared.compile({"a": 2})


async def load(port: int, path: str, seconds: float, clients: int) -> collections.Counter[int]:
    """``clients`` loops of GET ``path`` for ``seconds``: the count of each status."""
    statuses: collections.Counter[int] = collections.Counter()
    until = asyncio.get_running_loop().time() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while asyncio.get_running_loop().time() < until:
            async with session.get(path) as reply:
                await reply.read()
                statuses[reply.status] += 1

    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return statuses


@pytest.mark.node
@pytest.mark.parametrize("plane", [pytest.param("skmsg", marks=pytest.mark.kernel), "unix", "poll"])
async def test_instances_come_and_go_under_load_without_a_failed_request(plane: str, runtime_dir: Path) -> None:
    with run_node("tests.apps.instances:app", transport=plane) as (port, process):
        directory = runtime_base() / str(process.pid)
        running = asyncio.create_task(load(port, "/who", 6, 16))
        for count in (1, 4, 2, 3):
            await asyncio.sleep(1)
            answer = await asyncio.to_thread(control.request, directory, {"scale": "who", "instances": count})
            assert answer == {"instances": count}
        statuses = await running
        assert set(statuses) == {200} and sum(statuses.values()) > 500, statuses
        assert serving(port, "who") == 3
        deadline = asyncio.get_running_loop().time() + 30
        while len({pid for name, pid in choose_node(port=port).workers.items() if name.startswith("who")}) != 3:
            assert asyncio.get_running_loop().time() < deadline, "the last one to leave did not drain and exit"
            await asyncio.sleep(0.05)
        for bad, says in (({"scale": "who", "instances": 9}, "may run 1..4 instances"),
                          ({"scale": "nobody", "instances": 2}, "no function named 'nobody'"),
                          ({"grow": "who"}, "unknown request")):
            assert says in control.request(directory, bad)["error"]


@pytest.mark.node
async def test_the_autoscaler_follows_a_step_in_load(runtime_dir: Path) -> None:
    """KPA on short windows (panic 2 s, stable 4 s), target one request in flight per instance:
    6 clients against a 50 ms handler panic it from 1 to its max of 3 within the panic window
    (plus a tick); once the load is gone it comes back to 1."""
    with run_node("tests.apps.instances:app") as (port, _):
        assert serving(port, "busy") == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        running = asyncio.create_task(load(port, "/busy", 8, 6))
        reached = None
        while not running.done():
            if reached is None and serving(port, "busy") == 3:
                reached = loop.time() - started
            await asyncio.sleep(0.2)
        assert set(await running) == {200}
        assert reached is not None, "the panic never took it to 3 instances while the load ran"
        for _ in range(50):
            if serving(port, "busy") == 1:
                break
            await asyncio.sleep(0.2)
        assert serving(port, "busy") == 1
        decisions = choose_node(port=port).scaling
        assert decisions[0]["to"] > 1 and decisions[0]["panicking"] and decisions[0]["reason"].startswith("panic")
        assert decisions[-1]["to"] == 1 and decisions[-1]["reason"].startswith("stable")
        shown = subprocess.run([sys.executable, "-m", "spright", "stats", "--port", str(port)], capture_output=True,
                               text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
        # down to 1 at once, or through 2 when the load ended as the stable window averaged above 1.5
        last = f"{decisions[-1]['from']} → 1"
        assert "autoscaler's last decisions" in shown and last in shown and "panic:" in shown, shown
