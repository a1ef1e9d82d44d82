"""Several gateway processes on one port (``--gateways N``): the kernel spreads connections over
them, each request's answer comes back to the gateway that holds its client, and the node's
counters add them up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from spright.testing import node_metric, run_node

pytestmark = pytest.mark.node


def gateway_requests(port: int) -> list[int]:
    """Requests each gateway of the node counted, as ``spright stats --json`` reads them."""
    shown = orjson.loads(subprocess.run([sys.executable, "-m", "spright", "stats", "--port", str(port), "--json"],
                                        capture_output=True, check=True).stdout)
    assert shown["requests"] == sum(g["requests"] for g in shown["gateways"])
    return [g["requests"] for g in shown["gateways"]]


@pytest.mark.parametrize("plane", [pytest.param("skmsg", marks=pytest.mark.kernel), "unix", "poll"])
async def test_two_gateways_share_the_port_and_each_gets_its_own_answers(plane: str, runtime_dir: Path) -> None:
    with run_node("tests.apps.slow:app", transport=plane, args=("--gateways", "2")) as (port, _):
        bodies = [os.urandom(64) + b"%d" % i for i in range(400)]

        async def echo(session: aiohttp.ClientSession, body: bytes) -> bytes:
            async with session.post("/echo", data=body) as reply:
                assert reply.status == 200
                return await reply.read()

        connector = aiohttp.TCPConnector(limit=64, force_close=True)  # new connections: both gateways get some
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:
            answers = await asyncio.gather(*(echo(session, body) for body in bodies))
        assert answers == bodies, "every answer reached the client that asked"
        deadline = asyncio.get_running_loop().time() + 30
        while sum(per_gateway := gateway_requests(port)) < 400:  # each gateway publishes its row once a tick
            assert asyncio.get_running_loop().time() < deadline, per_gateway
        assert len(per_gateway) == 2 and all(count > 20 for count in per_gateway), per_gateway
        # whichever gateway serves /metrics, the latency histogram counts both gateways' requests:
        # sampled (each on a new connection) until each gateway's own count shows it served some
        latency = 'spright_request_duration_seconds_count{method="POST",route="/echo",status="2xx"}'
        samples = []
        deadline = asyncio.get_running_loop().time() + 60
        while not all(now > then for now, then in zip(gateway_requests(port), per_gateway, strict=True)):
            assert asyncio.get_running_loop().time() < deadline, "one gateway served no /metrics in 60 s"
            samples.append(node_metric(port, latency))
        assert samples and set(samples) == {400}, samples


async def test_a_crashed_worker_costs_prompt_502s_at_every_gateway(runtime_dir: Path) -> None:
    """The worker dies under requests held by both gateways: gateway 0 learns it from the
    supervisor, tells the other, and each answers its own clients 502 at once."""
    with run_node("tests.apps.demo:app", args=("--gateways", "2")) as (port, _):
        connector = aiohttp.TCPConnector(limit=16, force_close=True)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:
            async def get(path: str) -> int:
                async with session.get(path) as reply:
                    return reply.status

            statuses = await asyncio.gather(*(get("/crash") for _ in range(16)))
            # 502/503 at once, none the 504 of the chain's timeout (30 s): nobody waited for it
            assert set(statuses) <= {502, 503} and 502 in statuses, statuses
