"""The interface every data plane implements, and the contract it keeps. ``Transport`` has
about 18 members (most with defaults; ``attach`` is the one a data plane must write) and
``Endpoint`` three (``send``, ``close``, ``closed``).

A transport moves packed descriptors between endpoints (the gateway is endpoint 0, each
function worker has its own id). The contract (tests/test_contract.py runs it on every
data plane):

- ``send`` takes one or more whole descriptors and never blocks; each is delivered whole
  to the endpoint its first 4 bytes (``next_hop``) name, exactly once, in order per
  sender and destination. Receivers get whole descriptors, possibly several at once.
- Static chains: a sender names position ``hop`` of chain ``chain`` with the value
  ``addresses()[chain][hop]`` (and those two fields set); the receiver sees the endpoint id.
- Security domains: a descriptor from one function to a function of another domain is
  never delivered; it comes back to its sender at once, its kind changed to REFUSED
  (``Domains``). The gateway's domain reaches every domain.
- A descriptor for an endpoint nobody is attached to is lost, and the sender is unharmed;
  an endpoint id may be attached again (a restarted worker) and receives from then on.

Life cycle: the supervisor builds the transport and calls ``start()`` before any worker
exists; the started instance is pickled into every worker process, where ``attach()``
connects that process; an endpoint's owner calls ``close()`` and then awaits ``closed()``;
the supervisor calls ``stop()`` last and it must leave nothing behind (socket files, BPF
programs and maps, processes), even when called twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from spright.data.descriptor import (
    ANSWERS,
    CALL,
    GATEWAY,
    GATEWAY_SHIFT,
    KIND_MASK,
    OFFSETS,
    REFUSED,
    REQUEST,
    SIZE,
)
from spright.host.instances import LiveInstances

if TYPE_CHECKING:
    from types import TracebackType

    from spright.data.config import Config
    from spright.data.table import RouteTable
    from spright.host.pool import Payloads

Receiver = Callable[[bytes], None]
EARLY_FLUSH = 24  # descriptors; see Outbox
_FLAGS = OFFSETS["flags"]
_OWNER_BYTE = OFFSETS["request_id"] + 3  # the request id's top byte (little-endian): its gateway's bits


class Endpoint(ABC):
    """One process's attachment to the data plane."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Queue whole packed descriptors for delivery; never blocks."""

    @abstractmethod
    def close(self) -> None:
        """Stop sending and receiving; what the endpoint holds is released now or, where
        the data plane tears down asynchronously (grpc), by ``closed()``."""

    async def closed(self) -> None:
        """After ``close()``: wait until everything is released. Owners that can wait
        (workers, the gateway, tests) await it before their event loop ends."""


class Transport(ABC):
    name: ClassVar[str]
    # where ``live_routes`` reads a running node's chains from (``spright routes --live``)
    routes_source: ClassVar[str] = "data-plane"
    summary: ClassVar[str] = ""  # one line for `spright doctor`: what this data plane is
    # attach() needs no capability and no /dev/shm: a worker seals itself and drops to its user
    # before it, so the threads attach starts (grpc's) never hold root (spright/host/sandbox.py)
    attach_unprivileged: ClassVar[bool] = False

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        self.runtime_dir = runtime_dir
        self.table = table
        self.endpoints = table.endpoints
        self.instances = LiveInstances(runtime_dir, table)  # the node's live instances of each function
        self.domains = Domains(table, self.instances)  # what userspace data planes enforce (skmsg's kernel does)
        self.payloads: Payloads | None = None  # see carry()
        # the group of workers that drop to an unprivileged user (spright run --user): the data
        # plane's socket files are theirs to connect to, the runtime directory theirs to search
        self.group: int | None = None
        self._directory: int | None = None  # hold_directory()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into worker processes without this process's pool (each gives its own)."""
        return {**self.__dict__, "payloads": None, "_directory": None}

    def share_with(self, group: int | None) -> None:
        """Workers run as members of ``group`` (None: as root, or as whoever runs the node)."""
        self.group = group

    def grant(self, path: Path) -> None:
        """A socket file this process made, for the workers' group to connect to (0660)."""
        if self.group is not None:
            os.chown(path, -1, self.group)
            path.chmod(0o660)
        else:
            path.chmod(0o600)

    def hold_directory(self) -> None:
        """In a worker, before it drops to its user: a handle on the runtime directory, through
        which ``path`` reaches the socket files whatever the modes of the directories above it."""
        if self._directory is None:
            with contextlib.suppress(OSError):
                self._directory = os.open(self.runtime_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def path(self, name: str) -> str:
        """Where this process reaches file ``name`` of the runtime directory."""
        if self._directory is not None:
            return f"/proc/self/fd/{self._directory}/{name}"
        return str(self.runtime_dir / name)

    def set_live(self, function_id: int, endpoints: tuple[int, ...], canary: tuple[int, ...] = (),
                 share: int = 0) -> None:
        """The live instances of ``function_id`` are now ``endpoints`` and ``canary``, which gets
        ``share`` percent of the requests and calls (spright.front.membership decides): in
        ``LiveInstances`` for userspace data planes, then ``instances_changed``."""
        self.instances.set(function_id, endpoints, canary, share)
        self.instances_changed(function_id, endpoints, canary, share)

    def instances_changed(self, function_id: int, endpoints: tuple[int, ...], canary: tuple[int, ...] = (),
                          share: int = 0) -> None:
        """A data plane that picks instances elsewhere (skmsg: in the kernel) updates its own copy."""

    def carry(self, pool: Payloads) -> None:
        """The pool this process's payloads live in, given before ``attach``: a data plane that
        moves the bytes themselves (http) reads and writes them there; the others ignore it."""
        self.payloads = pool

    @classmethod
    def from_config(cls, runtime_dir: Path, table: RouteTable, config: Config) -> Transport:
        """The transport as the node's settings ask for it (``spright run``'s options)."""
        return cls(runtime_dir, table)

    # A worker started on its own (``spright worker``, spright.node.join) gets the transport from the
    # node directory: ``join_state`` (JSON) in the gateway's process, ``rejoin`` in the worker's.
    joinable = True  # False: the data plane's state cannot be handed over as JSON (yet)

    def join_state(self) -> dict[str, Any]:
        """What a worker started on its own needs beyond the node directory and the table."""
        return {}

    @classmethod
    def rejoin(cls, runtime_dir: Path, table: RouteTable, state: Mapping[str, Any]) -> Transport:
        """The worker side of the gateway's transport, from its ``join_state``."""
        return cls(runtime_dir, table)

    def addresses(self) -> tuple[tuple[int, ...], ...]:
        """Per chain and hop position, what a sender puts in ``next_hop`` to reach the
        endpoint at that position (with the descriptor's ``chain`` and ``hop`` set): by
        default the endpoint id itself; a data plane that routes chains itself may answer a
        marker it resolves."""
        return self.table.chains

    def node_info(self) -> dict[str, Any]:
        """Facts for the node file (``spright stats`` finds the data plane through them)."""
        return {}

    def shm_names(self) -> list[str]:
        """Its own segments in /dev/shm, for node.json's ``shm`` (swept should the node die)."""
        return []

    @classmethod
    def live_counters(cls, node_info: dict[str, Any]) -> dict[int, dict[str, int]] | None:
        """Per-endpoint counters kept by the data plane itself (the kernel's, for skmsg),
        read from any process given ``node_info()``; None when it keeps none."""
        return None

    @classmethod
    def live_routes(cls, node_info: dict[str, Any]) -> dict[int, tuple[int, ...]] | None:
        """Chain id -> hop list as the data plane holds it (skmsg: read back from the BPF
        map), from any process; None when routes live only in userspace."""
        return None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when this machine can run the transport, else why not and how to fix it."""
        return None

    @classmethod
    def option_checks(cls) -> list[tuple[str, str | None, str]]:
        """Options of this data plane that need more than the data plane itself (a program
        from Debian): (the option as spright run takes it, why not here or None, what it is),
        for `spright doctor`."""
        return []

    def start(self) -> None:
        """Node-wide setup, in the supervisor, before workers start."""

    def stop(self) -> None:
        """Node-wide teardown, in the supervisor, after workers stopped."""

    @abstractmethod
    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        """Connect the calling process as ``endpoint_id``; call ``on_receive`` per batch."""


class Domains:
    """Who may send to whom, and which instance gets what: the gateway (domain 0) talks to
    every domain; functions only to functions of their own domain. A data plane never
    delivers a descriptor across domains: it bounces it to its sender as REFUSED (kind
    changed, next_hop = the sender, all else kept), so the sender learns at once. A request
    or call to a function with several instances goes to one of its live instances, as
    ``LiveInstances.pick`` chooses it (``Config.balance``: least in flight by default, or
    round robin; a canary's share first, when the set is split). skmsg's kernel program does
    both itself; userspace data planes route their sends through ``split``."""

    def __init__(self, table: RouteTable, instances: LiveInstances) -> None:
        endpoints = table.endpoints
        domain = [0] * (max(endpoints) + 1)
        for endpoint in endpoints[1:]:
            function_id = table.function_of(endpoint)
            domain[endpoint] = table.functions[function_id - 1].domain if function_id else 0
        self._reach = [frozenset(e for e in endpoints if 0 in (mine, domain[e]) or domain[e] == mine)
                       for mine in domain]
        self._instances = instances
        # what addresses a function, whose live set picks the instance (every function has two
        # revision slots, spright.data.table), and the gateway when several share its answers
        self._picked = frozenset(f.id for f in table.functions)
        self._gateways = table.gateways  # answers go to the gateway that owns their request
        if len(self._gateways) > 1:
            self._picked = self._picked | {GATEWAY}

    def split(self, sender: int, data: bytes) -> dict[int, bytes]:
        """One batch per destination, each destination's order kept; what ``sender`` may not
        deliver comes back to ``sender``, marked REFUSED. What the kernel does per record on
        sk_msg, userspace transports do here."""
        reach = self._reach[sender] if sender < len(self._reach) else frozenset((GATEWAY,))
        picked = self._picked
        if len(data) == SIZE:
            dest = int.from_bytes(data[:4], "little")
            if dest in picked:
                dest, data = self._to_instance(dest, data)
            return {dest: data} if dest in reach else {sender: _refused(sender, data)}
        batches: dict[int, list[bytes]] = {}
        for start in range(0, len(data), SIZE):
            record = data[start : start + SIZE]
            dest = int.from_bytes(record[:4], "little")
            if dest in picked:
                dest, record = self._to_instance(dest, record)
            if dest not in reach:
                dest, record = sender, _refused(sender, record)
            batches.setdefault(dest, []).append(record)
        return {dest: b"".join(records) for dest, records in batches.items()}

    def _to_instance(self, function_id: int, record: bytes) -> tuple[int, bytes]:
        """A request or call for ``function_id``, addressed to one of its live instances; an
        answer for the gateway, to the gateway process that owns its request; anything else
        (a reply to instance 0, a notice) stays as addressed."""
        kind = record[_FLAGS] & KIND_MASK
        if function_id == GATEWAY:
            owner = record[_OWNER_BYTE] >> (GATEWAY_SHIFT - 24)
            if kind not in ANSWERS or not 0 < owner < len(self._gateways):
                return GATEWAY, record
            dest = self._gateways[owner]
        elif kind in (REQUEST, CALL):
            dest = self._instances.pick(function_id)
            if dest == GATEWAY:  # the activator: it reads the function from next_hop
                return dest, record
        else:
            return function_id, record
        return dest, dest.to_bytes(4, "little") + record[4:]


def _refused(sender: int, record: bytes) -> bytes:
    flags = (record[_FLAGS] & ~KIND_MASK) | REFUSED
    return b"".join((sender.to_bytes(4, "little"), record[4:_FLAGS], bytes((flags,)), record[_FLAGS + 1 :]))


class RecordProtocol(asyncio.Protocol):
    """Read side of a stream endpoint: hands whole descriptors to the receiver, keeping the
    tail of a descriptor the stream split until the rest arrives."""

    def __init__(self, on_receive: Receiver, connections: set[asyncio.BaseTransport] | None = None) -> None:
        """``connections``: a set this connection joins while open (a listener's endpoint
        closes them all when it closes)."""
        self._on_receive = on_receive
        self._tail = b""
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._connections is not None:
            self._connections.add(transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connections is not None:
            self._connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        cut = len(data) - len(data) % SIZE
        if cut != len(data):
            data, self._tail = data[:cut], data[cut:]
        else:
            self._tail = b""
        if data:
            self._on_receive(data)


class Outbox:
    """Batches descriptors queued during one loop iteration into a single ``send``.

    Many handlers finishing in the same iteration cost one syscall (and, on sk_msg, one
    sendmsg whose runs of same-destination records each get one verdict). A batch that
    reaches ``EARLY_FLUSH`` leaves at once, so the next hop starts on it while this process
    is still busy: pipelining across cores beats bigger batches (see docs/performance.md).

    ``with outbox.batch():`` the owner flushes itself when the block ends (a worker inside
    its receive callback), so no end-of-iteration flush is scheduled: that callback would
    cost a loop iteration and an epoll_wait(0) per hop at low load.
    """

    __slots__ = ("_endpoint", "_held", "_loop", "_queued")

    def __init__(self, endpoint: Endpoint, loop: asyncio.AbstractEventLoop) -> None:
        self._endpoint = endpoint
        self._loop = loop
        self._queued: list[bytes] = []
        self._held = False

    def batch(self) -> Outbox:
        """``with outbox.batch():`` what is put inside the block leaves in one send at its end."""
        self._held = True
        return self

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._held = False
        self.flush()

    @property
    def batching(self) -> bool:
        """Inside ``batch()``: a flush will come when the block ends."""
        return self._held

    def put(self, record: bytes) -> None:
        if not self._queued and not self._held:
            self._loop.call_soon(self.flush)
        self._queued.append(record)
        if len(self._queued) >= EARLY_FLUSH:
            self.flush()

    def send_now(self, record: bytes) -> None:
        """Send ``record`` at once, after anything queued (nothing to batch it with)."""
        self._queued.append(record)
        self.flush()

    def flush(self) -> None:
        """Send what is queued now (a receiver calls this at the end of a batch it handled)."""
        if self._queued:
            records, self._queued = self._queued, []
            self._endpoint.send(records[0] if len(records) == 1 else b"".join(records))
