"""S-SPRIGHT data plane: an eBPF sk_msg program routes descriptors between sockets.

Every endpoint owns one TCP loopback socket connected to a dummy listener that never
reads. ``ebpf/skmsg.c`` runs on every sendmsg() of those sockets and moves each run of
consecutive 32-byte descriptors bound for the same endpoint into the receive queue of
that endpoint's socket: the TCP stack is bypassed, the receiver's epoll wakes as for any
data, and one send() can carry a batch for many destinations. The program also resolves
static chains from a route map (``addresses()`` names each position NEXT_IN_CHAIN),
enforces security domains on the kernel's idea of the sender (its local port), bouncing a
refused descriptor back to its sender, and keeps per-endpoint per-CPU counters.

Life cycle: ``start()`` (supervisor) compiles and loads the program with bcc, fills the
route and domain maps from the route table, and pins the maps under
``/sys/fs/bpf/spright-<runtime dir>-<pid>/``; ``attach()`` (any process) registers its
freshly connected socket through the pins with the raw bpf(2) syscall (``bpf.py``: no
bcc, no LLVM in workers). ``stop()`` unpins, and the kernel frees maps and program once
the last file descriptor is gone. A crashed supervisor leaves its pin directory behind;
the next ``start()`` on the machine removes pin directories whose owner pid is dead.
``skmsg_maps`` reads and writes the pinned maps from any process (``spright stats``).

Kernel behaviour designed around (kernel 6.18): a descriptor the program drops (SK_DROP)
fails a lone send() with EACCES (uvloop then closes the endpoint) and, inside a batch,
makes send() return short and loses the descriptors after it; so undeliverable
descriptors are redirected to a sink socket that the supervisor drains, never dropped.
A full receiver never pushes back: redirected data is charged to the receiver beyond its
SO_RCVBUF (up to ``net.ipv4.tcp_mem``), so send() does not return EAGAIN and flow control
must come from the callers (in-flight limits).
Each verdict costs a redirect (an sk_msg allocation, two socket locks and a wake-up of the
receiver), so the program covers a whole run of same-target descriptors with one verdict,
and ``send`` groups a batch by target (stable: per-destination order is kept) so runs
are long. A run only spans the first scatterlist element (the linear data); writes are
cut at 32 KiB (one page-frag chunk) so an element holds up to a whole write.
A write the kernel splits inside a descriptor is harmless once its first 10 bytes are
in (through ``chain``): the verdict covers the descriptor's remaining bytes whenever they are sent
(``cork_bytes`` looked like the tool for the rest, but misrouted and duplicated descriptors).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import operator
import os
import re
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spright.data.descriptor import (
    OFFSETS,
    SIZE,
)
from spright.data.table import RouteTable
from spright.transport import bpf
from spright.transport.base import Endpoint, Receiver, RecordProtocol, Transport
from spright.transport.skmsg_maps import (
    ANONYMOUS,
    MAPS,
    MAX_CHAINS,
    MAX_ENDPOINTS,
    MAX_HOPS,
    MAX_INSTANCES,
    NO_ROUTE,
    SINK,
    Counters,
    read_counters,
    read_routes,
    register_socket,
    unregister_port,
    write_instances,
)
from spright.transport.skmsg_peer import DummyPeer
from spright.transport.skmsg_program import NEXT_IN_CHAIN, SOURCE, cflags, probe
from spright.transport.skmsg_register import SOCKET_NAME as REGISTER_SOCKET
from spright.transport.skmsg_register import Registrar, register_through

if TYPE_CHECKING:
    from spright.data.config import Config

__all__ = ["ANONYMOUS", "MAPS", "MAX_ENDPOINTS", "NEXT_IN_CHAIN", "NO_ROUTE", "Counters", "SkmsgTransport",
           "read_counters", "read_routes", "register_socket"]

# One sendmsg() of more than ~68 KiB can outgrow the kernel's 17-element scatterlist and be
# split at any byte; 32 KiB also fits one page-frag chunk, so runs stay long.
MAX_WRITE = 1024 * SIZE
# next_hop, hop, chain: what a descriptor's target depends on (hop and chain follow flags)
assert OFFSETS["hop"] == OFFSETS["flags"] + 1 and OFFSETS["chain"] == OFFSETS["hop"] + 1
_KEY = struct.Struct(f"<I{OFFSETS['hop'] - 4}xBH{SIZE - OFFSETS['chain'] - 2}x")
_KEY_BYTES = (*range(4), OFFSETS["hop"], OFFSETS["chain"], OFFSETS["chain"] + 1)
# Group a batch of at least GROUP_MIN descriptors by destination when that saves at least
# MIN_SAVED verdicts: sorting costs more than the verdicts it saves on small batches.
GROUP_MIN, MIN_SAVED = 32, 8


@functools.lru_cache(maxsize=64)
def _records(n: int) -> struct.Struct:
    """Splits n descriptors into n bytes objects in one C call."""
    return struct.Struct(f"{SIZE}s" * n)


def pin_dir(runtime_dir: Path, by_dir: bool) -> Path:
    """Unique per node: named after the owner pid, so that a later start() can sweep it; or,
    ``by_dir``, after the node directory of ``spright gateway`` (its name, and a digest of its
    whole path: two pods' directories may share a name), as its pid may be another PID
    namespace's."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", runtime_dir.name)  # bpffs rejects dots
    if by_dir:
        return bpf.BPF_FS / f"spright-node-{safe}-{hashlib.sha256(bytes(runtime_dir.resolve())).hexdigest()[:12]}"
    return bpf.BPF_FS / f"spright-{safe}-{os.getpid()}"


def _check_fits(table: RouteTable) -> None:
    """What the BPF maps hold beyond the route table's own limits (App.compile checks chains)."""
    if any(not 0 <= e < MAX_ENDPOINTS for e in table.endpoints):
        raise ValueError(f"skmsg handles endpoint ids 0..{MAX_ENDPOINTS - 1}: {len(table.endpoints)} endpoints")
    most = max(len(table.instance_endpoints(f.id)) for f in table.functions)
    if most > MAX_INSTANCES:  # both revision slots' (RouteTable.slot_endpoints)
        raise ValueError(f"skmsg runs at most {MAX_INSTANCES // 2} instances of a function per revision; one may "
                         f"have {most // 2}")


class SkmsgTransport(Transport):
    name = "skmsg"
    routes_source = "bpf-map"
    summary = "S-SPRIGHT: an eBPF sk_msg program redirects descriptors between sockets"

    def __init__(self, runtime_dir: Path, table: RouteTable, *, pinned_by_dir: bool = False) -> None:
        """``pinned_by_dir``: pins named after the node directory (``spright gateway``)."""
        super().__init__(runtime_dir, table)
        _check_fits(table)
        self.pinned_by_dir = pinned_by_dir
        self.pin_dir = pin_dir(runtime_dir, pinned_by_dir)
        self.port = 0  # the dummy listener's, set by start()
        self._bpf: Any = None  # bcc.BPF, supervisor only
        self._listener: DummyPeer | None = None
        self._registrar: Registrar | None = None  # pinned_by_dir: registers the sockets of workers without privileges
        self._register_at: Path | None = None  # a worker started on its own: where the gateway registers its socket

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Checks privileges, bcc, headers, then compiles and loads once (cached)."""
        return probe()

    def addresses(self) -> tuple[tuple[int, ...], ...]:
        """Static chains are resolved by the program from its route map."""
        return tuple((NEXT_IN_CHAIN,) * len(hops) for hops in self.table.chains)

    def __getstate__(self) -> dict[str, Any]:
        """Workers need only paths, the table and the port; bcc objects and threads stay home."""
        keep = ("runtime_dir", "table", "endpoints", "instances", "domains", "pin_dir", "port", "group")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _bpf=None, _listener=None, payloads=None, _registrar=None, _register_at=None,
                             _directory=None)

    @classmethod
    def from_config(cls, runtime_dir: Path, table: RouteTable, config: Config) -> Transport:
        return cls(runtime_dir, table, pinned_by_dir=config.node_dir is not None)

    def join_state(self) -> dict[str, Any]:
        registrar = self._registrar.path if self._registrar else None
        return {"pin_dir": str(self.pin_dir), "port": self.port, "register": str(registrar) if registrar else None}

    @classmethod
    def rejoin(cls, runtime_dir: Path, table: RouteTable, state: Mapping[str, Any]) -> Transport:
        """A worker started on its own: the gateway registers its socket (skmsg_register), so
        it needs no privilege and no bpffs."""
        transport = cls(runtime_dir, table)
        transport.pin_dir, transport.port = Path(state["pin_dir"]), int(state["port"])
        transport._register_at = Path(state["register"]) if state.get("register") else None
        return transport

    def node_info(self) -> dict[str, Any]:
        return {"pin_dir": str(self.pin_dir), "endpoints": self.endpoints, "maps": sorted(MAPS)}

    @classmethod
    def live_counters(cls, node_info: Mapping[str, Any]) -> dict[int, dict[str, int]] | None:
        counters = read_counters(Path(node_info["pin_dir"]), list(node_info["endpoints"]))
        return {e: c._asdict() for e, c in counters.items()}

    @classmethod
    def live_routes(cls, node_info: Mapping[str, Any]) -> dict[int, tuple[int, ...]] | None:
        return read_routes(Path(node_info["pin_dir"]))

    @property
    def tcp_bytes(self) -> int:
        """Bytes that reached the dummy listener over TCP: 0 while every send is redirected."""
        return self._listener.tcp_bytes if self._listener else 0

    def start(self) -> None:
        from bcc import BPF, BPFAttachType, lib

        bpf.mount_bpffs()
        self.pin_dir = pin_dir(self.runtime_dir, self.pinned_by_dir)
        if self.pinned_by_dir:
            bpf.unpin(self.pin_dir)  # left by this node directory's previous gateway
        else:  # pids of other PID namespaces look dead from ours: sweep only as a plain node
            bpf.sweep_stale_pins()
        try:
            self._bpf = BPF(src_file=str(SOURCE).encode(), cflags=cflags(self.instances.balance))
            fn = self._bpf.load_func(b"spright_msg", BPF.SK_MSG)
            socks_fd = lib.bpf_table_fd(self._bpf.module, b"spright_socks")
            BPF.attach_func(fn, socks_fd, BPFAttachType.SK_MSG_VERDICT)
            self.pin_dir.mkdir(mode=0o700)
            for pin_name, map_name in MAPS.items():
                bpf.pin(lib.bpf_table_fd(self._bpf.module, map_name.encode()), self.pin_dir / pin_name)
            self._fill_tables()
            self._listener = DummyPeer()
            self.port = self._listener.port
            sink = socket.create_connection(("127.0.0.1", self.port))
            self._listener.start(sink)
            with bpf.PinnedMap(self.pin_dir / "socks") as socks:
                socks.update(SINK, sink.fileno())
            if self.pinned_by_dir:  # workers started on their own hand their sockets in
                functions = [e for e in self.endpoints if e not in self.table.gateways]
                self._registrar = Registrar(self.runtime_dir / REGISTER_SOCKET, self.pin_dir, functions)
                self.grant(self._registrar.path)  # the workers' group's, in a pod whose gateway is root
        except BaseException:
            self.stop()
            raise

    def _fill_tables(self) -> None:
        """Routes and domains, from the compiled table; NO_ROUTE everywhere else."""
        routes = [NO_ROUTE] * (MAX_CHAINS * MAX_HOPS)
        for chain, hops in enumerate(self.table.chains):
            routes[chain * MAX_HOPS : chain * MAX_HOPS + len(hops)] = hops
        domains = [NO_ROUTE] * MAX_ENDPOINTS
        domains[0] = 0  # the gateway's own domain
        for function in self.table.functions:
            for endpoint in self.table.instance_endpoints(function.id):
                domains[endpoint] = function.domain
        for endpoint in self.table.gateways:
            domains[endpoint] = 0
        with bpf.PinnedMap(self.pin_dir / "routes") as route_map:
            route_map.fill(routes)
        with bpf.PinnedMap(self.pin_dir / "domains") as domain_map:
            domain_map.fill(domains)
        for function_id in (f.id for f in self.table.functions):
            self.instances_changed(function_id, *self.instances.split(function_id))
        with bpf.PinnedMap(self.pin_dir / "gateways") as gateway_map:
            gateway_map.fill(self.table.gateways)

    def instances_changed(self, function_id: int, endpoints: tuple[int, ...], canary: tuple[int, ...] = (),
                          share: int = 0) -> None:
        """The kernel program picks among the live instances in its own map."""
        write_instances(self.pin_dir, function_id, endpoints, canary, share)

    def stop(self) -> None:
        """Idempotent. The kernel frees maps and program once no fd or pin refers to them."""
        if self._registrar:
            self._registrar.close()
            self._registrar = None
        if self._listener:
            self._listener.close()
            self._listener = None
        bpf.unpin(self.pin_dir)
        if self._bpf is not None:
            self._bpf.cleanup()  # closes our program and map fds
            self._bpf = None

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        if endpoint_id not in self.endpoints:
            raise ValueError(f"endpoint id {endpoint_id} is not one of this node's: {self.endpoints}")
        if not self.port:
            raise RuntimeError("SkmsgTransport.attach() before start()")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # blocking, as a loopback connect is immediate: the loop's sock_connect would start
            # uvloop's resolver threads now, before the worker seals itself and drops its privileges
            sock.connect(("127.0.0.1", self.port))
            sock.setblocking(False)
            # Registered before it carries any byte, else the first send goes out over TCP.
            if self._register_at is not None:
                port = register_through(self._register_at, endpoint_id, sock)
            else:
                port = register_socket(self.pin_dir, endpoint_id, sock)
            transport, _ = await loop.create_connection(lambda: RecordProtocol(on_receive), sock=sock)
        except BaseException:
            sock.close()
            raise
        return _SkmsgEndpoint(transport, self, endpoint_id, port)

    def counters(self) -> dict[int, Counters]:
        """Live counters of this node's endpoints (see ``read_counters`` for other processes)."""
        return read_counters(self.pin_dir, self.endpoints)

    def read_routes(self) -> dict[int, tuple[int, ...]]:
        """The route map read back from the kernel (see module ``read_routes``)."""
        return read_routes(self.pin_dir)


class _Targets(dict[tuple[int, int, int], int]):
    """(next_hop, hop, chain) -> destination endpoint, as the program resolves it (-1: none)."""

    def __init__(self, chains: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        self._chains = chains

    def __missing__(self, key: tuple[int, int, int]) -> int:
        next_hop, hop, chain = key
        if next_hop == NEXT_IN_CHAIN:
            hops = self._chains[chain] if chain < len(self._chains) else ()
            next_hop = hops[hop] if hop < len(hops) else -1
        if len(self) > 4096:
            self.clear()  # explicit next_hops with ever new (hop, chain): stay small
        self[key] = next_hop
        return next_hop


class _SkmsgEndpoint(Endpoint):
    """Sends through the event loop's transport: one write() syscall per batch when the
    socket is writable (always, in practice: redirects never push back), else buffered
    behind a writer callback. A mixed batch is first grouped by target so that the
    program needs one verdict per target rather than per descriptor."""

    def __init__(self, transport: asyncio.Transport, owner: SkmsgTransport, endpoint_id: int, port: int) -> None:
        self._transport = transport
        self._pin_dir = owner.pin_dir
        self._id = endpoint_id
        self._port = port
        self._targets = _Targets(owner.table.chains)

    def send(self, data: bytes) -> None:
        if len(data) % SIZE:
            raise ValueError(f"{len(data)} bytes is not a whole number of descriptors")
        if GROUP_MIN * SIZE <= len(data) <= 4 * MAX_WRITE:
            data = self._grouped(data)
        if len(data) <= MAX_WRITE:
            self._transport.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), MAX_WRITE):
            self._transport.write(view[start : start + MAX_WRITE])

    def _grouped(self, data: bytes) -> bytes:
        """Stable grouping by destination: each destination's descriptors keep their order.
        Done only when it saves at least MIN_SAVED verdicts (each a redirect in the kernel);
        every step is a C loop but the cheap all-alike check."""
        n = len(data) // SIZE
        if all(data[i::SIZE] == data[i : i + 1] * n for i in _KEY_BYTES):
            return data  # one key (next_hop, hop, chain): one destination
        targets = list(map(self._targets.__getitem__, _KEY.iter_unpack(data)))
        runs = 1 + sum(map(operator.ne, targets, targets[1:]))
        if runs - len(set(targets)) < MIN_SAVED:
            return data
        order = sorted(range(n), key=targets.__getitem__)  # stable
        return b"".join(operator.itemgetter(*order)(_records(n).unpack(data)))

    def close(self) -> None:
        self._transport.close()  # a closed socket leaves the sockhash by itself
        with contextlib.suppress(OSError):  # the supervisor may have unpinned already
            unregister_port(self._pin_dir, self._id, self._port)
