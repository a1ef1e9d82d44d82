"""The skmsg data plane's pinned BPF maps: their shapes, and what reads or writes them
from any process (workers registering their socket, ``spright stats``, the tests), with
the raw bpf(2) syscall of ``bpf.py``: no bcc, no LLVM outside the supervisor."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NamedTuple

from spright.data.table import MAX_CHAINS, MAX_HOPS
from spright.host.instances import header
from spright.transport import bpf

MAX_ENDPOINTS = 1024  # endpoint ids are 0..MAX_ENDPOINTS-1 (sizes the BPF maps)
MAX_INSTANCES = 32  # instances one function may have
NO_ROUTE = 0xFFFFFFFF  # route map entry past a chain's end; domain of an unknown id
SINK = ANONYMOUS = MAX_ENDPOINTS  # sockhash key of the sink; counters of unknown senders
# pin file name -> map name in skmsg.c
MAPS = {
    "socks": "spright_socks",
    "routes": "spright_routes",
    "domains": "spright_domains",
    "ports": "spright_ports",
    "stats": "spright_stats",
    "instances": "spright_instances",
    "gateways": "spright_gateways",
    "load": "spright_load",
}


class Counters(NamedTuple):
    """One endpoint's counters, summed over CPUs (struct counters in skmsg.c). Senders are
    identified by the kernel (their socket), never by the descriptor's sender field."""

    sent: int  # descriptors sent by this endpoint's socket
    received: int  # descriptors redirected into this endpoint's socket
    bytes_sent: int  # payload bytes referenced by them (sum of length fields)
    bytes_received: int
    dropped: int  # addressed to this endpoint while no socket was attached
    redirect_failed: int  # sent by this endpoint and not even the sink took them
    domain_drops: int  # sent by this endpoint to a function of another domain
    bad_route: int  # sent by this endpoint naming no endpoint, or a chain hop with no route


def read_counters(pin_dir: Path, endpoints: list[int]) -> dict[int, Counters]:
    """Live counters from the pinned map, from any process; key ``ANONYMOUS`` (if asked
    for) holds what came from unregistered sockets and too-short headers."""
    with bpf.PinnedMap(pin_dir / "stats") as stats:
        return {e: Counters(*stats.lookup_percpu(e, len(Counters._fields))) for e in endpoints}


def read_routes(pin_dir: Path) -> dict[int, tuple[int, ...]]:
    """Chain id -> hop list as the kernel holds it (chains are numbered from 0 with no gap)."""
    routes: dict[int, tuple[int, ...]] = {}
    with bpf.PinnedMap(pin_dir / "routes") as table:
        for chain in range(MAX_CHAINS):
            hops = []
            for hop in range(MAX_HOPS):
                target = table.lookup(chain * MAX_HOPS + hop)
                if target is None or target == NO_ROUTE:
                    break
                hops.append(target)
            if not hops:
                break
            routes[chain] = tuple(hops)
    return routes


def register_socket(pin_dir: Path, endpoint_id: int, sock: socket.socket) -> int:
    """Make ``sock`` the socket of ``endpoint_id``; returns its local port.

    The port goes in first (the program must know the sender before the socket can send
    through it), replacing any port the endpoint had (a restarted or re-attached worker).
    """
    port: int = sock.getsockname()[1]
    with bpf.PinnedMap(pin_dir / "ports") as ports:
        for stale in ports.snapshot_keys():
            if stale != port and ports.lookup(stale) == endpoint_id:
                ports.delete(stale)
        ports.update(port, endpoint_id)
    with bpf.PinnedMap(pin_dir / "load") as load:
        load.update_i64(endpoint_id, 0)  # nothing in flight at a new socket
    with bpf.PinnedMap(pin_dir / "socks") as socks:
        socks.update(endpoint_id, sock.fileno())  # BPF_ANY: replaces a restarted worker's socket
    return port


def unregister_port(pin_dir: Path, endpoint_id: int, port: int) -> None:
    """Forget ``port`` unless another endpoint took it over since."""
    with bpf.PinnedMap(pin_dir / "ports") as ports:
        if ports.lookup(port) == endpoint_id:
            ports.delete(port)


def write_instances(pin_dir: Path, function_id: int, endpoints: tuple[int, ...], canary: tuple[int, ...] = (),
                    share: int = 0) -> None:
    """The live instances of ``function_id``, the stable ones and the canary's: their ids
    first, then the word of both counts and the canary's share (``instances.header``; the
    program reads it, then that many ids); none: ``NO_ROUTE``, the activator's."""
    with bpf.PinnedMap(pin_dir / "instances") as instances:
        for group, ids in ((0, endpoints), (1, canary)):
            for i, endpoint in enumerate(ids):
                instances.update(MAX_ENDPOINTS * (1 + group * MAX_INSTANCES) + function_id * MAX_INSTANCES + i,
                                 endpoint)
        live = endpoints or canary
        instances.update(function_id, header(len(endpoints), len(canary), share) if live else NO_ROUTE)
