"""The one small interface every data plane implements.

A transport moves packed descriptors between endpoints (the gateway is endpoint 0, each
function worker has its own id). ``send`` takes one or more whole descriptors; each is
delivered to the endpoint named by its first 4 bytes (``next_hop``), in order per
destination. Receivers get whole descriptors, possibly several at once.

Life cycle: the supervisor builds the transport and calls ``start()`` before any worker
exists; the started instance is pickled into every worker process, where ``attach()``
connects that process; the supervisor calls ``stop()`` last and it must leave nothing
behind (socket files, BPF programs and maps).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from spright.descriptor import SIZE

if TYPE_CHECKING:
    from spright.routing import RouteTable

Receiver = Callable[[bytes], None]
EARLY_FLUSH = 24  # descriptors; see Outbox


class Endpoint(ABC):
    """One process's attachment to the data plane."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Queue whole packed descriptors for delivery; never blocks."""

    @abstractmethod
    def close(self) -> None: ...


class Transport(ABC):
    name: ClassVar[str]
    # True: senders may put NEXT_IN_CHAIN in next_hop and the data plane finds the endpoint
    # at position ``hop`` of ``chain`` (the eBPF program does, from its route map).
    resolves_chains: ClassVar[bool] = False

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        self.runtime_dir = runtime_dir
        self.table = table
        self.endpoints = table.endpoints

    def node_info(self) -> dict[str, Any]:
        """Facts for the node file (``spright stats`` finds the data plane through them)."""
        return {}

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

    def start(self) -> None:
        """Node-wide setup, in the supervisor, before workers start."""

    def stop(self) -> None:
        """Node-wide teardown, in the supervisor, after workers stopped."""

    @abstractmethod
    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        """Connect the calling process as ``endpoint_id``; call ``on_receive`` per batch."""


def by_destination(data: bytes) -> dict[int, bytes]:
    """Split a batch into one batch per next hop, keeping each destination's order.

    What the kernel does per record on sk_msg, userspace transports do here.
    """
    if len(data) == SIZE:
        return {int.from_bytes(data[:4], "little"): data}
    batches: dict[int, list[bytes]] = {}
    for start in range(0, len(data), SIZE):
        record = data[start : start + SIZE]
        batches.setdefault(int.from_bytes(record[:4], "little"), []).append(record)
    return {dest: b"".join(records) for dest, records in batches.items()}


class RecordProtocol(asyncio.Protocol):
    """Read side of a stream endpoint: hands whole descriptors to the receiver, keeping the
    tail of a descriptor the stream split until the rest arrives."""

    def __init__(self, on_receive: Receiver) -> None:
        self._on_receive = on_receive
        self._tail = b""

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
    is still busy: pipelining across cores beat bigger batches (noop +30%, a 10-hop chain
    +35% under ``wrk -c64`` here; 16-32 measured best).

    ``held``: the owner will flush itself before returning to the loop (a worker inside
    its receive callback), so no end-of-iteration flush is scheduled: that callback would
    cost a loop iteration and an epoll_wait(0) per hop at low load.
    """

    __slots__ = ("_endpoint", "_loop", "_queued", "held")

    def __init__(self, endpoint: Endpoint, loop: asyncio.AbstractEventLoop) -> None:
        self._endpoint = endpoint
        self._loop = loop
        self._queued: list[bytes] = []
        self.held = False

    def put(self, record: bytes) -> None:
        if not self._queued and not self.held:
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
