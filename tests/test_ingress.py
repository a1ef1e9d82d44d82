"""``--sidecar --ingress`` (the paper's Knative, the "knative" plane of bench.paper): every hop of a
chain goes through the node's nginx and then the callee's queue-proxy, nginx is the node's child
and goes with it, leaving no file, and the option is refused, saying why, where it cannot apply
(the contract suite runs this data plane as ``http+ingress``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from spright.data.config import Config
from spright.host.nodefile import runtime_base
from spright.testing import run_node
from spright.transport import ingress
from spright.transport.http import HttpTransport
from tests.kit.dataplane import make_table
from tests.kit.nodes import children_of, still_running

HOPS = 4  # echo3: gateway -> echo1 -> echo2 -> echo3 -> gateway, each hop one request through nginx


def nginx_counts(port: int) -> tuple[int, int]:
    """nginx's own counts (stub_status) of the connections it accepted and the requests it
    served, this one's included."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n" % ingress.STATUS_HOST.encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    accepts, _, requests = body.split(b"\n")[2].split()  # "server accepts handled requests\n A H R"
    return int(accepts), int(requests)


async def post_all(port: int, bodies: list[bytes]) -> list[bytes]:
    async with aiohttp.ClientSession() as session:

        async def one(body: bytes) -> bytes:
            async with session.post(f"http://127.0.0.1:{port}/", data=body) as response:
                assert response.status == 200
                return await response.read()

        return await asyncio.gather(*map(one, bodies))


def post(port: int, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        answer = b""
        while chunk := sock.recv(1 << 16):
            answer += chunk
    head, _, got = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return got


@pytest.mark.node
@pytest.mark.needs("nginx")
def test_every_hop_goes_through_nginx_and_nginx_goes_with_the_node(runtime_dir: Path) -> None:
    """As bench.paper's knative runs it: senders spread their hops over several connections
    to the ingress (the contract suite runs the default, one)."""
    with run_node("bench.apps:echo3", transport="http --sidecar --ingress",
                  args=("--ingress-connections", "4")) as (port, process):
        node_dir = runtime_base() / str(process.pid)
        info = json.loads((node_dir / "node.json").read_text())["transport_info"]
        ingress_port = info["ingress"]["port"]
        children = children_of(process.pid)
        (nginx,) = [pid for pid, (_, command) in children.items()
                    if command.startswith(f"spright: ingress nginx :{ingress_port} ")]
        _, before = nginx_counts(ingress_port)
        bodies = [os.urandom(64), os.urandom(300_000)]  # the large one: past nginx's body buffers
        for body in bodies:
            assert post(port, body) == body
        many = [os.urandom(64) for _ in range(40)]
        assert asyncio.run(post_all(port, many)) == many
        accepts, after = nginx_counts(ingress_port)
        assert after - before == HOPS * (len(bodies) + len(many)) + 1
        # 12 (sender, destination) pairs among 4 endpoints, and 3 status reads: the chain's 4
        # pairs took several connections each
        assert accepts - 3 > 12, accepts
        counters = HttpTransport.live_counters(info)  # and every function's queue-proxy saw them
        serving = [int(f["id"]) for f in json.loads((node_dir / "node.json").read_text())["functions"]]
        assert counters is not None and all(counters[f]["requests"] >= len(bodies) + len(many) for f in serving)
        assert not [p for p in (node_dir / "ingress").rglob("*") if p.is_file() and p.parent.name == "client_body"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert not node_dir.exists()
    deadline = time.monotonic() + 5
    while still_running(nginx, children[nginx][0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not still_running(nginx, children[nginx][0]), "nginx outlived its node"


def test_ingress_needs_http_and_its_sidecars() -> None:
    with pytest.raises(ValueError, match=r"--ingress .* use it with --transport http --sidecar, not "
                                         r"--transport http without --sidecar"):
        Config(transport="http", ingress=True)
    with pytest.raises(ValueError, match=r"--ingress .* not --transport unix without --sidecar"):
        Config(transport="unix", ingress=True)
    with pytest.raises(ValueError, match=r"--ingress-connections N .* is for --ingress, got 4 without --ingress"):
        Config(transport="http", sidecar=True, ingress_connections=4)
    assert Config(transport="http", sidecar=True, ingress=True, ingress_connections=4).ingress


def test_without_nginx_the_node_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingress, "nginx_binary", lambda: None)
    transport = HttpTransport(tmp_path, make_table(2), sidecar=True, ingress=True)
    with pytest.raises(RuntimeError, match=r"nginx.*apt-get install nginx-light.*make setup"):
        transport.start()
    assert transport._sidecars == [] and list(tmp_path.iterdir()) == [], "nothing started, nothing left"


def test_doctor_says_whether_the_ingress_can_run() -> None:
    result = subprocess.run([sys.executable, "-m", "spright", "doctor"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if "http --sidecar --ingress" in line]
    assert ("ok" if ingress.unavailable_reason() is None else "nginx-light") in row, row
