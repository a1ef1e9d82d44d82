"""A real node (``spright run`` subprocess, one process per function) on every transport."""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from spright.host.nodefile import runtime_base
from spright.testing import run_node
from spright.transport.skmsg import NO_ROUTE
from tests.kit.kernel import bpf_objects, still_loaded
from tests.kit.nodes import descendants_of, node_file, still_running
from tests.kit.wire import exchange

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def echo_node(transport: str, runtime_dir: Path):
    with run_node("examples.echo:app", transport=transport) as (port, process):
        yield f"http://127.0.0.1:{port}", process


@pytest.fixture(scope="module")
def demo_node(transport: str):
    with run_node("tests.apps.demo:app", transport=transport) as (port, process):
        yield f"http://127.0.0.1:{port}", port, process


def random_body(index: int, rng: random.Random) -> bytes:
    """Distinct bodies (the index leads), 0 B to 1 MiB, log-uniform so every size range shows up."""
    if index == 0:
        return b""
    size = (1 << 20) if index % 50 == 1 else int(2 ** rng.uniform(2, 20))
    return index.to_bytes(4, "little") + os.urandom(size - 4)


async def test_context_variables_do_not_leak_between_requests(demo_node) -> None:
    url, _, _ = demo_node
    async with aiohttp.ClientSession() as session:  # one keep-alive connection, one worker
        bodies = []
        for _ in range(3):
            async with session.get(f"{url}/context-count") as response:
                bodies.append(await response.text())
    assert bodies == ["0", "0", "0"]


@pytest.mark.slow
async def test_10k_keepalive_requests_each_get_their_own_body_back(echo_node) -> None:
    url, _ = echo_node
    rng = random.Random(1234)
    bodies = [random_body(index, rng) for index in range(10_000)]
    assert len(set(bodies)) == 10_000
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)
    mismatches: list[int] = []
    connector = aiohttp.TCPConnector(limit=64, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                async with session.post(f"{url}/echo", data=bodies[index]) as response:
                    if response.status != 200 or await response.read() != bodies[index]:
                        mismatches.append(index)

        await asyncio.gather(*(client() for _ in range(64)))
    assert mismatches == []


def routes_live(pid: int) -> dict:
    result = subprocess.run([sys.executable, "-m", "spright", "routes", "--live", "--json", "--node", str(pid)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def kernel_route(pin_dir: str, key: int, value: int | None = None) -> int:
    """Entry ``key`` (chain * MAX_HOPS + hop: chain 0's hops are keys 0, 1, ...) of the node's
    pinned route map, read with bpftool (not spright's own reader); with ``value``, written first."""
    path, key_bytes = f"{pin_dir}/routes", [str(b) for b in key.to_bytes(4, "little")]
    if value is not None:
        value_bytes = [str(b) for b in value.to_bytes(4, "little")]
        subprocess.run(["bpftool", "map", "update", "pinned", path, "key", *key_bytes, "value", *value_bytes],
                       check=True, capture_output=True)
    out = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", path, "key", *key_bytes],
                         check=True, capture_output=True, text=True).stdout
    return int.from_bytes(bytes(int(b, 16) for b in json.loads(out)["value"]), "little")


def test_routes_live_shows_the_table_the_data_plane_holds(echo_node, transport: str) -> None:
    """``spright routes --live``: on skmsg the route map read back from the kernel, on unix the
    table the node recorded. Catches: --live printing the compiled table while claiming the
    kernel's (the map is altered under it below), or reading the wrong entries."""
    _, process = echo_node
    data = routes_live(process.pid)
    (route,) = data["routes"]
    hops = [(hop["id"], hop["name"]) for hop in route["hops"]]
    compiled = [(1, "parse"), (2, "enrich"), (3, "reply"), (0, "gateway")]  # examples/echo.py's one chain
    assert (route["method"], route["path"], route["chain"], hops) == ("POST", "/echo", 0, compiled)
    if transport != "skmsg":  # userspace data planes keep no route table of their own
        assert data["source"] == "node-file"
        return
    assert data["source"] == "bpf-map" and route["matches_compiled"] is True
    pin_dir = node_file(process.pid).transport_info["pin_dir"]
    assert [kernel_route(pin_dir, hop) for hop in range(5)] == [1, 2, 3, 0, NO_ROUTE]
    try:
        kernel_route(pin_dir, 3, 2)  # the last hop back to the gateway now names "enrich"
        altered = routes_live(process.pid)["routes"][0]
        assert [hop["id"] for hop in altered["hops"]] == [1, 2, 3, 2] and altered["matches_compiled"] is False
    finally:
        assert kernel_route(pin_dir, 3, 0) == 0


async def test_malformed_request_is_400_and_the_node_keeps_serving(demo_node) -> None:
    url, port, _ = demo_node
    response = await asyncio.to_thread(exchange, port, b"GARBAGE \x00\x01 nonsense\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")
    async with aiohttp.ClientSession() as session, session.get(f"{url}/page") as r:
        assert r.status == 201


async def test_pipelined_requests_are_answered_in_order_over_partial_writes(demo_node) -> None:
    _, port, _ = demo_node
    requests = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in (b"first", b"second", b"third")
    ) + b"GET /sleep?s=0.1 HTTP/1.1\r\nHost: x\r\n\r\nGET /info/z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for start in range(0, len(requests), 7):  # dribble the bytes in
        writer.write(requests[start : start + 7])
        await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    bodies = [part.split(b"\r\n\r\n", 1)[1][:40] for part in raw.split(b"HTTP/1.1 ")[1:]]
    assert bodies[:4] == [b"FIRST!!", b"SECOND!!", b"THIRD!!", b"slept"]
    assert json.loads(bodies[4] + raw.rsplit(b"\r\n\r\n", 1)[1][40:])["params"] == {"item": "z"}


async def test_chunked_request_body(demo_node) -> None:
    _, port, _ = demo_node
    request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    response = await asyncio.to_thread(exchange, port, request)
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\nHELLO WORLD!!")


async def test_a_half_closed_connection_gets_the_answers_it_asked_for_then_closes(demo_node) -> None:
    """RFC 9112 §9.6: a client that shuts its writing side may still read. The request it
    completed is answered (after the EOF: its handler sleeps); the one it cut short is dropped."""
    _, port, _ = demo_node
    request = (b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    response = await asyncio.to_thread(exchange, port, request)  # shuts its side, reads until closed
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\nslept")
    assert response.count(b"HTTP/1.1 ") == 1


async def test_error_statuses(demo_node) -> None:
    url, port, _ = demo_node
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/missing") as r:
            assert r.status == 404
        async with session.delete(f"{url}/echo") as r:
            assert r.status == 405 and r.headers["allow"] == "POST"
        async with session.get(f"{url}/boom") as r:
            assert r.status == 500 and len((await r.json())["error_id"]) == 12
        async with session.get(f"{url}/sleep?s=2") as r:
            assert r.status == 504
        async with session.get(f"{url}/stuck?hang=1") as r:
            assert r.status == 504
        async with session.get(f"{url}/stuck") as r:
            assert r.status == 200, "the hung handler was cancelled: the function's only place is free again"
        async with session.post(f"{url}/add", json=[1, 2]) as r:
            assert r.status == 200 and await r.json() == {"sum": 3}, "the worker that raised keeps serving"
    too_big_body = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\nabc"
    too_big = await asyncio.to_thread(exchange, port, too_big_body)
    assert too_big.startswith(b"HTTP/1.1 413 ")
    huge_header = b"GET /page HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert (await asyncio.to_thread(exchange, port, huge_header)).startswith(b"HTTP/1.1 431 ")


async def test_pool_exhaustion_is_503_with_retry_after_and_recovers(demo_node) -> None:
    url, _, _ = demo_node
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> tuple[int, str | None]:
            async with session.get(f"{url}/sleep?s=0.3") as r:
                await r.read()
                return r.status, r.headers.get("retry-after")

        results = await asyncio.gather(*(one() for _ in range(140)))
        assert (503, "1") in results
        assert {status for status, _ in results} <= {200, 503, 504}
        async with session.post(f"{url}/echo", data=b"after") as r:
            assert r.status == 200 and await r.read() == b"AFTER!!"


async def test_crashed_worker_costs_a_prompt_502_and_is_restarted(demo_node) -> None:
    url, _, _ = demo_node
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/crash") as r:
            assert r.status == 502  # not the 504 its route's timeout (30 s) would give: no waiting for it
        statuses = []
        for _ in range(100):  # 503 while it restarts, then it is back (and crashes again: 502)
            async with session.get(f"{url}/crash") as r:
                statuses.append(r.status)
            if r.status == 502:
                break
            await asyncio.sleep(0.1)
        assert statuses[-1] == 502 and set(statuses[:-1]) <= {503}
        async with session.post(f"{url}/echo", data=b"still") as r:
            assert await r.read() == b"STILL!!"


async def test_a_crashed_callee_fails_its_caller_promptly(demo_node) -> None:
    url, _, _ = demo_node
    async with aiohttp.ClientSession() as session:
        for _ in range(100):  # wait out a restart left by an earlier test
            async with session.get(f"{url}/call-crash") as r:
                body = await r.json()
            if r.status != 503:
                break
            assert body["function"] == "crash" and "restarting" in body["error"], "503 names the callee"
            await asyncio.sleep(0.1)
        # a 502 naming the callee, not the 504 of the call's timeout: the caller did not wait for it
        assert r.status == 502 and body["function"] == "crash", body


async def test_head_gets_the_get_headers_without_a_body(demo_node) -> None:
    _, port, _ = demo_node
    request = b"HEAD /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = await asyncio.to_thread(exchange, port, request)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 ") and b"content-length: 50007" in head and body == b""


async def test_functions_sharing_a_process(transport: str, runtime_dir: Path) -> None:
    with run_node("tests.apps.shared:app", transport=transport) as (port, process):
        workers = node_file(process.pid).workers
        assert workers["first"] == workers["second"] != workers["alone"]
        async with aiohttp.ClientSession() as session:
            for i in range(20):
                async with session.post(f"http://127.0.0.1:{port}/chain", data=f"x{i}") as r:
                    assert r.status == 200 and await r.read() == f"x{i}1231".encode()


def test_sigterm_leaves_nothing_behind(transport: str) -> None:
    with run_node("examples.echo:app", transport=transport) as (port, process):
        info = node_file(process.pid)
        assert all(Path("/dev/shm", name).exists() for name in info.shm)
        pin_dir = Path(info.transport_info["pin_dir"]) if transport == "skmsg" else None
        ours = bpf_objects(pin_dir) if pin_dir else {"map": set(), "prog": set()}
        children = descendants_of(process.pid)  # the workers are the template's children
        workers = {pid for pid, (_, command) in children.items() if command.startswith("spright: worker ")}
        assert len(workers) == 3 and workers == set(info.workers.values()), (children, info.workers)
        assert {children[pid][1].strip() for pid in workers} == {f"spright: worker {name} [echo]"
                                                                 for name in ("parse", "enrich", "reply")}
        title = (Path("/proc") / str(process.pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert title.strip() == f"spright: gateway [echo] 127.0.0.1:{port} ({transport.split()[0]})", title
        sidecars = {children[pid][1].strip().rsplit(" :", 1)[0] for pid, (_, command) in children.items()
                    if command.startswith("spright: sidecar ")}
        assert sidecars == ({f"spright: sidecar {name}" for name in ("parse", "enrich", "reply")}
                            if "--sidecar" in transport else set()), children
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert not (runtime_base() / str(process.pid)).exists()
    assert not any(Path("/dev/shm", name).exists() for name in info.shm)
    assert not [pid for pid in workers if still_running(pid, children[pid][0])], "the supervisor reaps its workers"
    deadline = time.monotonic() + 5  # its other children (multiprocessing's resource tracker) follow it
    while (left := [c for pid, c in children.items() if still_running(pid, c[0])]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"processes of the node outlived it: {left}"
    if pin_dir is not None:
        assert ours["map"] and ours["prog"], "the node's BPF objects were found while it ran"
        assert not pin_dir.exists()
        deadline = time.monotonic() + 5  # the kernel frees them once the last fd closes
        while any((kept := still_loaded(ours)).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kept == {"map": set(), "prog": set()}, f"BPF objects left behind: {kept}"
