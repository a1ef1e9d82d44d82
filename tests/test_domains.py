"""Security domains, one rule on every data plane: a chain stays in one domain (checked at
compile, see test_routing), and a ctx.call into another domain fails at once with 403 and is
counted; the gateway is the only bridge. The same test runs in process and on real nodes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from spright.testing import TestClient
from tests.apps.domains import app

pytestmark = pytest.mark.asyncio


def check_refused(status: int, body: dict) -> None:
    assert status == 200, body
    assert body["refused"] == 403
    assert body["function"] == "charge"
    assert "cannot cross security domains" in body["detail"] and "'payments'" in body["detail"]


async def test_in_process_a_call_across_domains_is_refused_and_counted() -> None:
    async with TestClient(app) as client:
        assert (await client.post("/charge", json={"amount": 3})).json() == {"charged": 3}, "the gateway bridges"
        r = await client.get("/careful-shop")
        check_refused(r.status, r.json())
        r = await client.get("/shop")  # not caught: the caller fails with the same status
        assert r.status == 403 and r.json()["function"] == "charge"
        careful = client.counters_of("careful_shop")
        assert careful["refused_calls"] == 1 and careful["handler_errors"] == 0, "the refusal is counted, once"
        assert client.counters_of("charge")["descriptors_in"] == 1, "only the gateway's request reached it"
        assert client.pool.in_use() == 0, "the refused call's slot was freed"


@pytest.mark.node
async def test_on_a_node_a_call_across_domains_fails_at_once_not_by_timeout(domains_node: int, transport: str) -> None:
    """The route's timeout is 20 s; the test's own bound of 5 s fails a data plane that
    drops the call silently (the caller would wait for its timeout)."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{domains_node}") as session:
        async with session.post("/charge", json={"amount": 3}) as r:
            assert r.status == 200 and await r.json() == {"charged": 3}
        async with asyncio.timeout(5):
            async with session.get("/careful-shop") as r:
                check_refused(r.status, await r.json())
            async with session.get("/shop") as r:
                assert r.status == 403
        async with session.get("/metrics") as r:
            text = await r.text()
    refused = [line for line in text.splitlines() if line.startswith('spright_refused_calls_total{domain="domains",'
                                                                      'function="careful_shop"}')]
    assert refused and float(refused[0].split()[-1]) == 1.0, refused
    if transport == "skmsg":  # the kernel refused it, and counted it on the sender
        drops = [line for line in text.splitlines()
                 if line.startswith("spright_kernel_domain_drops_total") and 'function="careful_shop"' in line]
        assert drops and float(drops[0].split()[-1]) == 1.0, drops


async def test_typed_path_parameters_reach_the_handler_typed() -> None:
    async with TestClient(app) as client:
        r = await client.get("/item/12/2.5/a/b")
        assert r.json() == {"n": ["int", "12"], "price": ["float", "2.5"], "rest": ["str", "a/b"]}
        assert (await client.get("/item/x/2.5/a")).status == 404
