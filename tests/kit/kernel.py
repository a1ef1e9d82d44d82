"""The sk_msg data plane from outside spright: plain sockets registered like endpoints,
counter deltas, and the BPF objects a node owns as bpftool (not spright's own reader) sees them."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from spright.transport import skmsg
from spright.transport.skmsg import SkmsgTransport


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


def _bpftool(*args: str) -> Any:
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def bpf_objects(pin_dir: Path) -> dict[str, set[int]]:
    """Ids of the maps pinned in ``pin_dir`` and of the programs using them, by kind ("map",
    "prog"): one node's own, whatever other nodes (other tests, other users) load meanwhile."""
    maps = {_bpftool("map", "show", "pinned", str(pin))["id"] for pin in pin_dir.iterdir()}
    return {"map": maps, "prog": {p["id"] for p in _bpftool("prog", "show") if set(p.get("map_ids", ())) & maps}}


def still_loaded(objects: dict[str, set[int]]) -> dict[str, set[int]]:
    """Which of ``objects`` (ids by kind, "map" or "prog") the kernel still holds, whoever
    holds them (a pin keeps one alive with no fd open). The kernel frees them asynchronously
    once unreferenced; ids are not reused at once, so an id still here is the same object."""
    return {kind: ids & {o["id"] for o in _bpftool(kind, "show")} for kind, ids in objects.items()}
