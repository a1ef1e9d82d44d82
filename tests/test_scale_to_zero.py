"""Scale to zero: an autoscaled function with ``min_instances=0`` loses its last instance once
idle; what arrives for it then waits at the first gateway's activator, which starts an
instance and sends it on: requests and ``ctx.call``s alike, none lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from spright import App, RoutingError
from spright.data.autoscale import ScalePolicy
from spright.ops.nodes import choose_node
from spright.testing import run_node
from tests.kit.nodes import proc_stat, serving

ZERO = ScalePolicy(min_instances=0, scale_to_zero_grace=1)


async def until_scaled_to_zero(port: int, name: str) -> None:
    for _ in range(100):
        if serving(port, name) == 0 and not any(w.startswith(name) for w in choose_node(port=port).workers):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} still has an instance after 10 s idle")


@pytest.mark.node
@pytest.mark.parametrize(("plane", "worker_start"), [pytest.param("skmsg", "fork", marks=pytest.mark.kernel),
                                                     ("unix", "fork"), ("poll", "fork"), ("unix", "spawn")])
async def test_a_function_scales_to_zero_and_the_activator_wakes_it(plane: str, worker_start: str,
                                                                     runtime_dir: Path) -> None:
    """Woken instances fork from the node's template (the default), or are spawned."""
    with run_node("tests.apps.instances:app", transport=plane, args=("--worker-start", worker_start)) as (port, node):
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async def get(path: str) -> dict:
                async with session.get(path) as reply:
                    assert reply.status == 200, await reply.text()
                    return await reply.json()

            first = (await get("/sleepy"))["pid"]
            await until_scaled_to_zero(port, "sleepy")
            started = time.monotonic()
            cold = await asyncio.gather(*(get("/sleepy") for _ in range(10)))  # all wait at the activator
            cold_start = time.monotonic() - started
            assert {c["pid"] for c in cold} != {first} and len({c["pid"] for c in cold}) >= 1
            # (it is still there: it scales to zero only after a second idle)
            parents = {stat[1] for pid in {c["pid"] for c in cold} if (stat := proc_stat(pid))}
            assert parents and (node.pid in parents) == (worker_start == "spawn"), "forked, or spawned"
            assert serving(port, "sleepy") >= 1

            await until_scaled_to_zero(port, "sleepy")
            called = await asyncio.gather(*(get("/wakes") for _ in range(10)))  # calls wait there too
            callees = {c["callee"] for c in called}
            assert first not in callees and not callees & {c["pid"] for c in cold}, "a new instance answered"

        reasons = [d["reason"] for d in choose_node(port=port).scaling if d["function"] == "sleepy"]
        assert any(r.startswith("activator: ") for r in reasons), reasons
        assert any("no request for" in r for r in reasons), reasons
        print(f"{plane}: 10 requests at zero instances answered after {cold_start * 1000:.0f} ms")


def test_scale_to_zero_needs_a_lone_stateless_function() -> None:
    app = App("zero")
    with pytest.raises(RoutingError, match=r"stateful .* cannot scale to zero"):
        app.add_function(lambda ctx: None, name="cart", stateful=True, autoscale=ZERO)
    app.add_function(lambda ctx: None, name="a", process="p", autoscale=ZERO)
    app.add_function(lambda ctx: None, name="b", process="p")
    app.route("/a", "a")
    with pytest.raises(RoutingError, match="function 'a' shares process 'p' with other functions"):
        app.compile()
