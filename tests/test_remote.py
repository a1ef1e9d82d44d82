"""Cross-node hops: two nodes, the bank's in a network namespace of its own (made here, joined
to this one by a veth pair, torn down after), the shop's here. A chain and a ``ctx.call`` cross
to the bank and back over HTTP: answers are right, the request's cookies travel, the remote
function's error status comes back as it was, a slow remote costs the route's 504, and a
killed remote node a prompt 502."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from spright import App, RoutingError
from spright.testing import free_port, run_node

pytestmark = pytest.mark.node
NAMESPACE = f"spright-test-{os.getpid()}"
HOST, BANK = "10.213.0.1", "10.213.0.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespace() -> Iterator[str]:
    with network_namespace() as name:
        yield name


@contextlib.contextmanager
def network_namespace() -> Iterator[str]:
    """A network namespace with a veth to this one: this side HOST, that side BANK."""
    outside, inside = f"sp{os.getpid() % 100000}a", f"sp{os.getpid() % 100000}b"
    ip("netns", "add", NAMESPACE)
    try:
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", NAMESPACE)
        ip("addr", "add", f"{HOST}/30", "dev", outside)
        ip("link", "set", outside, "up")
        for command in (("addr", "add", f"{BANK}/30", "dev", inside), ("link", "set", inside, "up"),
                        ("link", "set", "lo", "up")):
            ip("-n", NAMESPACE, *command)
        yield NAMESPACE
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
        ip("netns", "del", NAMESPACE)


def start_bank(namespace: str, plane: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The bank's node in ``namespace``, serving on BANK:8080 (``args``: more `spright run` options)."""
    bank = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-m", "spright", "run",
                             "tests.apps.remote:bank", "--host", BANK, "--port", "8080", "--transport", plane, *args],
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((BANK, 8080), timeout=1).close()
            return bank
        except OSError:
            assert bank.poll() is None and time.monotonic() < deadline, "the bank's node did not serve"
            time.sleep(0.2)


@pytest.mark.parametrize("plane", [pytest.param("skmsg", marks=pytest.mark.kernel), "unix"])
@pytest.mark.needs("netns")
async def test_a_chain_and_a_call_cross_to_another_node(plane: str, namespace: str, runtime_dir: Path) -> None:
    bank = start_bank(namespace, plane)
    try:
        with run_node("tests.apps.remote:shop", transport=plane, env={"BANK_URL": f"http://{BANK}:8080"}) as (port, _):
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", cookies={"session": "s1"}) as session:
                receipts = []

                async def post(path: str, order: dict) -> tuple[int, dict, float]:
                    started = time.monotonic()
                    async with session.post(path, json=order) as reply:
                        receipts.append(reply.headers.get("x-receipt"))
                        return reply.status, await reply.json(), time.monotonic() - started

                for amount in range(20):
                    status, body, _ = await post("/checkout", {"amount": amount})
                    assert (status, body) == (200, {"amount": amount, "prepared": True, "charged": amount,
                                                    "session": "s1", "finished": True})
                    assert receipts[-1] == f"r{amount}", "a header the remote hop set reaches the client"
                status, body, _ = await post("/ask", {"amount": 3})
                assert status == 200 and body["asked"]["charged"] == 3
                status, body, _ = await post("/checkout", {"amount": 1, "decline": True})
                assert (status, body) == (402, {"error": "card declined", "status": 402, "function": "payment"})

                status, body, took = await post("/checkout", {"amount": 1, "sleep": 5})
                assert status == 504 and took >= 1.9, (status, took)  # at the route's timeout (2 s), not before

                bank.terminate()
                bank.wait(20)
                status, body, took = await post("/checkout", {"amount": 1})
                assert status == 502 and "unreachable" in body["error"], (status, body, took)  # not a 504: no wait
                status, body, took = await post("/ask", {"amount": 1})
                assert status == 502, (status, body, took)  # a timeout would be 504
    finally:
        if bank.poll() is None:
            bank.kill()
            bank.wait()


def test_a_remote_function_needs_an_http_url() -> None:
    app = App("bad")
    with pytest.raises(RoutingError, match=r"remote function 'pay': a remote node is http://HOST\[:PORT\]"):
        app.remote("pay", "https://10.0.0.2/pay")


def test_knative_mode_runs_each_function_as_a_node_of_its_own(runtime_dir: Path) -> None:
    """What ``spright deploy knative`` writes, on one machine: a node per function and an
    ingress node, all on the http data plane, told by SPRIGHT_REMOTES where the others are;
    the same handlers answer the same chain."""
    functions = ["parse", "enrich", "reply"]
    ports = {name: free_port() for name in [*functions, "ingress"]}
    urls = {name: f"http://127.0.0.1:{ports[name]}" for name in functions}
    with contextlib.ExitStack() as nodes:
        for name in functions:
            others = {other: url for other, url in urls.items() if other != name}
            nodes.enter_context(run_node("examples.echo:app", transport="http", port=ports[name],
                                         env={"SPRIGHT_REMOTES": orjson.dumps(others).decode()}))
        port, _ = nodes.enter_context(run_node("examples.echo:app", transport="http", port=ports["ingress"],
                                               env={"SPRIGHT_REMOTES": orjson.dumps(urls).decode()}))
        for body in (b"hello", os.urandom(4096)):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/echo", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200 and answer.read() == body


def test_remotes_must_name_functions_of_the_app(runtime_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "spright", "run", "examples.echo:app", "--port", "0", "--remotes",
                           '{"nope": "http://127.0.0.1:9"}'], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "remotes name no function of app 'echo': nope" in done.stderr, done.stderr


def test_with_a_peer_token_only_nodes_that_carry_it_call_exposed_functions(runtime_dir: Path) -> None:
    token = {"SPRIGHT_PEER_TOKEN": "s3cret-token"}
    with run_node("tests.apps.remote:bank", env=token) as (bank, _), \
            run_node("tests.apps.remote:shop", env={**token, "BANK_URL": f"http://127.0.0.1:{bank}"}) as (shop, _):
        def post(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b'{"amount": 4}', method="POST",
                                             headers={"content-type": "application/json", **headers})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, orjson.loads(answer.read())
            except urllib.error.HTTPError as refused:
                return refused.code, orjson.loads(refused.read())

        assert post(shop, "/checkout", {}) == (200, {"amount": 4, "prepared": True, "charged": 4, "session": None,
                                                     "finished": True})
        status, body = post(bank, "/.spright/call/payment", {})
        assert status == 401 and "SPRIGHT_PEER_TOKEN" in body["error"], body
        assert post(bank, "/.spright/call/payment", {"authorization": "Bearer wrong"})[0] == 401
        assert post(bank, "/.spright/call/payment", {"authorization": "Bearer s3cret-token"})[0] == 200
