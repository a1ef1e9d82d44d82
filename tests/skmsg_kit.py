"""Helpers for the sk_msg data plane tests (test_skmsg*.py): descriptors, route tables,
collecting inboxes, raw sockets registered like endpoints, counter deltas."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from spright.data.descriptor import SIZE, Descriptor
from spright.data.table import RouteTable
from spright.routing import App
from spright.transport import skmsg
from spright.transport.base import Endpoint
from spright.transport.skmsg import NEXT_IN_CHAIN, SkmsgTransport


def desc(next_hop: int, sender: int, request_id: int, length: int = 0) -> Descriptor:
    return Descriptor(next_hop, sender, 0, 0, 0, 0, 0, length, request_id, 0, 0)


def chained(chain: int, hop: int, request_id: int) -> Descriptor:
    return Descriptor(NEXT_IN_CHAIN, 0, 0, hop, chain, 0, 0, 0, request_id, 0, 0)


def make_table(functions: int, domains: dict[int, str] | None = None, chains: list[list[int]] = ()) -> RouteTable:
    """Functions f1..fN (ids 1..N; domain 'app' unless named), one route per chain."""
    app = App("app")
    for i in range(1, functions + 1):
        app.add_function(lambda ctx: None, name=f"f{i}", domain=(domains or {}).get(i))
    for n, hops in enumerate(chains or [[1]]):
        app.route(f"/r{n}", [f"f{i}" for i in hops])
    return app.compile()


class Inbox:
    """Collects what one endpoint receives; ``take(n)`` waits for n descriptors."""

    def __init__(self) -> None:
        self.items: list[Descriptor] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        assert len(data) % SIZE == 0
        self.items += [Descriptor.unpack(data[i : i + SIZE]) for i in range(0, len(data), SIZE)]
        self._changed.set()

    async def take(self, n: int, timeout: float = 2.0) -> list[Descriptor]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        taken, self.items = self.items[:n], self.items[n:]
        return taken


async def attach(t: SkmsgTransport, endpoint_id: int) -> tuple[Endpoint, Inbox]:
    inbox = Inbox()
    return await t.attach(endpoint_id, inbox), inbox


def insert_raw(t: SkmsgTransport, endpoint_id: int, sock: socket.socket) -> None:
    """Register a plain blocking socket, as attach() does, to write raw bytes through it
    (no grouping by target: the program sees the batch exactly as written)."""
    skmsg.register_socket(t.pin_dir, endpoint_id, sock)


def raw_socket(t: SkmsgTransport, endpoint_id: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", t.port))
    insert_raw(t, endpoint_id, sock)
    return sock


def delta(before: dict[int, skmsg.Counters], after: dict[int, skmsg.Counters], field: str) -> dict[int, int]:
    return {e: getattr(after[e], field) - getattr(before[e], field) for e in after}


def bpftool_ids(kind: str) -> set[int]:
    out = subprocess.run(["bpftool", "-j", kind, "show"], check=True, capture_output=True, text=True).stdout
    return {o["id"] for o in json.loads(out) if o.get("name", "").startswith("spright")}


def pinned_objects(pin_dir: Path) -> dict[str, set[int]]:
    """Ids of the maps pinned in ``pin_dir`` and of the programs using them: one transport's
    own, whatever other nodes (other tests, other users) load meanwhile."""
    def show(*args: str) -> Any:
        return json.loads(subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout)

    maps = {show("map", "show", "pinned", str(pin))["id"] for pin in pin_dir.iterdir()}
    return {"map": maps, "prog": {p["id"] for p in show("prog", "show") if set(p.get("map_ids", ())) & maps}}
