"""Each security domain has a memory pool, a counter segment, span rings and, on the poll data
plane, a ring segment of its own: a worker
maps its own domain's segments and no other's, the gateway maps every domain's, and a hostile
function cannot open another domain's segment by name nor read it through another process's
/proc (spright/host/sandbox.py)."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from spright.ops.nodes import choose_node, snapshot
from spright.testing import node_metric, run_node

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def traced_domains_node(transport: str, runtime_dir: Path) -> Iterator[int]:
    """tests/apps/domains.py on a node that traces (so it keeps span rings too)."""
    with run_node("tests.apps.domains:app", transport=transport, args=("--trace-sample", "1")) as (port, _):
        yield port


def mapped(pid: int, segments: set[str]) -> set[str]:
    """Which of ``segments`` (names in /dev/shm) process ``pid`` has mapped."""
    paths = {line.split(maxsplit=5)[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()}
    return {name for name in segments if f"/dev/shm/{name}" in paths}


def post(port: int, path: str, body: object) -> tuple[int, object]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, orjson.dumps(body), {"content-type": "application/json"})
        reply = connection.getresponse()
        return reply.status, orjson.loads(reply.read())
    finally:
        connection.close()


def test_a_worker_maps_its_own_domains_pool_and_no_other(domains_node: int) -> None:
    info = choose_node(port=domains_node)
    segments = {name for name in info.shm if name and not name.endswith(("-metrics", "-rings"))}
    payments, shop = mapped(info.workers["charge"], segments), mapped(info.workers["shop"], segments)
    assert payments and shop, "each worker maps its own domain's pool"
    assert not payments & shop, "the two domains share no segment"
    assert mapped(info.workers["spy"], segments) == shop, "a function maps its own domain's pool only"
    assert mapped(info.pid, segments) == payments | shop, "the gateway maps every domain's"
    assert post(domains_node, "/charge", {"amount": 3}) == (200, {"charged": 3}), "and requests are served"


def test_a_worker_maps_its_own_domains_counters_and_span_rings_and_no_other(traced_domains_node: int) -> None:
    assert post(traced_domains_node, "/charge", {"amount": 3}) == (200, {"charged": 3})
    assert post(traced_domains_node, "/spy", {"segments": [], "paths": []})[0] == 200
    info = choose_node(port=traced_domains_node)
    counters, spans = set(info.metrics.segments), set(info.traces["segments"])
    assert len(counters) == len(spans) == 3, "a segment per domain: the gateways', payments', the shop's"
    payments, shop = mapped(info.workers["charge"], counters | spans), mapped(info.workers["shop"], counters | spans)
    assert len(payments) == len(shop) == 2 and not payments & shop, "its own domain's counters and rings, no other's"
    assert mapped(info.workers["spy"], counters | spans) == shop
    assert mapped(info.pid, counters | spans) == counters | spans, "the gateway maps every domain's"
    stats = {entry["name"]: entry for entry in snapshot(info)["functions"]}  # `spright stats`
    assert stats["charge"]["descriptors_in"] >= 1 and stats["spy"]["descriptors_in"] >= 1
    for domain, function in (("payments", "charge"), ("domains", "spy")):  # each domain's, on the gateway's page
        labels = f'domain="{domain}",function="{function}"'
        assert node_metric(traced_domains_node, f"spright_descriptors_in_total{{{labels}}}") >= 1


def test_a_poll_worker_maps_its_own_domains_ring_segment_and_no_other(transport: str, domains_node: int) -> None:
    if transport != "poll":
        pytest.skip("the poll data plane's shared-memory rings")
    info = choose_node(port=domains_node)
    rings: dict[str, list[int]] = info.transport_info["rings"]  # segment -> the endpoints it holds rings between
    assert len(rings) == 3 and set(rings) <= set(info.shm), "a segment per domain, each swept should the node die"
    ids = {entry["name"]: entry["id"] for entry in info.functions}
    mine = {function: mapped(info.workers[function], set(rings)) for function in ("charge", "shop", "spy")}
    assert len(mine["charge"]) == len(mine["shop"]) == 1 and mine["charge"] != mine["shop"], mine
    assert mine["spy"] == mine["shop"], "a function maps its own domain's rings only"
    assert mapped(info.pid, set(rings)) == set(rings), "the gateway maps every domain's"
    (payments,), (shop,) = mine["charge"], mine["shop"]
    assert ids["charge"] in rings[payments] and ids["charge"] not in rings[shop]
    assert {ids["shop"], ids["spy"]} <= set(rings[shop]) and ids["shop"] not in rings[payments]
    assert post(domains_node, "/charge", {"amount": 3}) == (200, {"charged": 3}), "and requests are served"
    connection = http.client.HTTPConnection("127.0.0.1", domains_node, timeout=10)
    try:  # a call across domains, which has no ring: refused back to the caller at once, on its own ring
        connection.request("GET", "/careful-shop")
        reply = connection.getresponse()
        assert reply.status == 200 and orjson.loads(reply.read())["refused"], "the call comes back refused"
    finally:
        connection.close()


@pytest.mark.needs("root")  # workers are sealed only when the node runs as root
def test_a_function_cannot_open_another_domains_memory(transport: str, traced_domains_node: int) -> None:
    domains_node = traced_domains_node
    info = choose_node(port=domains_node)
    segments = {name for name in info.shm if name}
    charge, gateway = info.workers["charge"], info.pid
    # payments' pool, counters and span rings; and the gateways' counters and rings, which no worker maps
    theirs = mapped(charge, segments) | (mapped(gateway, segments) - mapped(charge, segments)
                                         - mapped(info.workers["shop"], segments))
    kinds = {"metrics", "spans", "rings"} if transport == "poll" else {"metrics", "spans"}
    assert {name.rsplit("-", 1)[1] for name in theirs} >= kinds, theirs
    paths = [f"/proc/{gateway}/mem", f"/proc/{charge}/mem", f"/proc/{charge}/environ",
             *(f"/proc/{pid}/map_files/{_first_mapping(pid, name)}" for pid in (gateway, charge)
               for name in theirs & mapped(pid, segments))]
    status, met = post(domains_node, "/spy", {"segments": sorted(theirs), "paths": paths, "ptrace": [gateway, charge]})
    assert status == 200, met
    assert isinstance(met, dict)
    for name in theirs:
        assert met[name] == "FileNotFoundError", f"another domain's segment {name} by name: {met[name]}"
    for path in paths:
        assert met[path] == "PermissionError", f"{path}: {met[path]}"
    assert met["umount /dev/shm"] == os.strerror(1), "a worker cannot unmount its empty /dev/shm (EPERM)"
    for door in (f"ptrace {gateway}", f"ptrace {charge}", "bpf"):  # what the capabilities it dropped allowed
        assert met[door] == os.strerror(1), f"{door}: {met[door]}"
    for caps in ("CapEff", "CapBnd"):  # raw I/O too (this kernel has none to try: no iopl, no /dev/mem)
        held = int(met[caps], 16)
        for bit, name in ((17, "CAP_SYS_RAWIO"), (19, "CAP_SYS_PTRACE"), (21, "CAP_SYS_ADMIN"), (39, "CAP_BPF")):
            assert not held >> bit & 1, f"{name} still in {caps} ({met[caps]})"


def _first_mapping(pid: int, name: str) -> str:
    """The ``/proc/PID/map_files`` entry of the first mapping of segment ``name``."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith(f"/dev/shm/{name}"):
            return line.split()[0]
    raise LookupError(f"{name} is not mapped by {pid}")
