"""Carts outlive the cart worker: SIGKILL it and every shopper's cart is still there, in the
embedded SQLite store (the default) and in Redis (``--redis URL``), as upstream keeps them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spright.testing import free_port, run_node
from tests.kit.boutique import HttpShopper
from tests.kit.nodes import node_file

pytestmark = pytest.mark.node
PRODUCT = "OLJCESPC7Z"


def cart_pid(node_pid: int) -> int:
    return node_file(node_pid).workers["cart"]


async def cart_survives_a_killed_cart_worker(url: str, node_pid: int) -> None:
    shopper = HttpShopper(url)
    try:
        added = await shopper.request("POST", "/cart", data={"product_id": PRODUCT, "quantity": 3})
        assert added.status == 302
        before = cart_pid(node_pid)
        os.kill(before, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:  # the supervisor restarts it; until then the cart answers 502/503
            with contextlib.suppress(KeyError, ValueError, OSError):
                if cart_pid(node_pid) != before:
                    page = await shopper.request("GET", "/cart", json=True)
                    if page.status == 200:
                        break
            assert time.monotonic() < deadline, "the cart worker did not come back"
            await asyncio.sleep(0.1)
        assert [(row["item"]["id"], row["quantity"]) for row in page.json()["items"]] == [(PRODUCT, 3)]
    finally:
        await shopper.close()


async def test_sqlite_carts_survive_a_killed_cart_worker(runtime_dir: Path) -> None:
    with run_node("apps.online_boutique:app") as (port, process):
        await cart_survives_a_killed_cart_worker(f"http://127.0.0.1:{port}", process.pid)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of our own (Debian's), on a free port, stopped after the test."""
    server = shutil.which("redis-server")
    assert server is not None, "the test is marked needs('redis')"
    port = free_port()
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.needs("redis")
async def test_redis_carts_survive_a_killed_cart_worker(runtime_dir: Path, redis_url: str) -> None:
    import redis.asyncio

    with run_node("apps.online_boutique:app", env={"SPRIGHT_REDIS_URL": redis_url}) as (port, process):
        await cart_survives_a_killed_cart_worker(f"http://127.0.0.1:{port}", process.pid)
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = await client.keys("cart:*")
        assert len(keys) == 1 and await client.hgetall(keys[0]) == {PRODUCT: "3"}, "the cart lives in Redis"
    finally:
        await client.aclose()


WRITER = """
import asyncio, sys
from apps.online_boutique.carts import SqliteCarts
asyncio.run(SqliteCarts().add("shopper", sys.argv[1], 2))
"""


async def test_a_cart_written_by_another_process_is_read_afresh(tmp_path: Path, monkeypatch) -> None:
    """Two cart processes at once (two instances, or a reload's old and new revision): what one
    adds, the other's next read sees, though it had that cart in memory."""
    from apps.datadir import forget_connections
    from apps.online_boutique.carts import SqliteCarts

    monkeypatch.setenv("SPRIGHT_DATA_DIR", str(tmp_path))
    forget_connections()
    try:
        carts = SqliteCarts()
        assert await carts.get("shopper") == {}  # known now, in this process
        subprocess.run([sys.executable, "-c", WRITER, PRODUCT], check=True, env={**os.environ}, timeout=60)
        assert await carts.get("shopper") == {PRODUCT: 2}
    finally:
        forget_connections()
