"""D-SPRIGHT data plane: descriptors on shared-memory rings, busy-polled.

One single-producer single-consumer ring per (sender, receiver) pair lives in shared memory,
a segment per security domain (``ring_layout``): domain d's holds the rings between the
gateways and d's endpoints and among d's endpoints. A worker maps its own domain's segment
only, so it can neither read another domain's descriptors nor forge one into their rings;
two functions of different domains have no ring at all (``Domains`` bounces such a send to
its sender, on the sender's ring to itself). A sender appends records and advances the
ring's ``tail``; the receiver's poller, a callback that the event loop runs on every turn,
copies out what lies between ``head`` and ``tail`` and advances ``head``. No syscall per
descriptor and no wake-up: as in the paper, every process burns a core polling (that is
what the comparison shows).

With ``poll_idle_us`` (``spright run --poll-idle-us N``) a poller that found nothing for
N µs goes to sleep on a datagram socket of its own, and the next sender rings it: usable on
machines with fewer cores than processes, at the price of a wake-up after idle spells.

Memory ordering: ring indices are plain aligned 64-bit loads and stores, which x86-64
orders as the protocol needs (a store is never reordered with an earlier store, a load
never with an earlier load): the records are written before the ``tail`` that publishes
them and read after the ``tail`` that announced them. Going to sleep is the one place that
needs a store followed by a load in order on both sides (the poller stores ``sleeping``
then re-reads every ``tail``; a sender stores ``tail`` then reads ``sleeping``): both put a
full fence between the two (``_fence``: an uncontended lock round trip, a locked
instruction). ``unavailable_reason`` refuses other architectures.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import platform
import secrets
import socket
import threading
import time
from collections import deque
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

from spright.data.config import Config
from spright.data.table import RouteTable
from spright.transport.base import Endpoint, Receiver, Transport

CAPACITY = 1024  # descriptors per ring (a power of two)
RECORD = 32  # bytes per descriptor (descriptor.SIZE)
LINE = 64  # a cache line: producer and consumer words never share one
# in each segment, per receiver: a control line (sleeping, attached; a receiver in several
# segments keeps a copy in each), then per sender a ring: [tail line][head line][CAPACITY records]
_RING_BYTES = 2 * LINE + CAPACITY * RECORD
_LOCK = threading.Lock()


def _fence() -> None:
    """A full memory barrier: the lock's acquire is a locked instruction."""
    _LOCK.acquire()
    _LOCK.release()


class PollTransport(Transport):
    name = "poll"
    joinable = False  # its endpoints' state is not handed over to `spright worker` (yet)
    summary = "D-SPRIGHT: busy-polled shared-memory rings, a core per process (--poll-idle-us to sleep)"

    def __init__(self, runtime_dir: Path, table: RouteTable, idle_us: int | None = None) -> None:
        """``idle_us``: None polls forever; N sleeps after N µs without a descriptor."""
        super().__init__(runtime_dir, table)
        self.idle_us = idle_us
        self.domain_of = {e: _domain(table, e) for e in self.endpoints}
        self.layout = ring_layout(table)
        token = secrets.token_hex(16)
        self.ring_names = {domain: f"spright-{token}-d{domain}-rings" for domain in self.layout}
        self._segments: dict[int, SharedMemory] = {}  # the supervisor's, created by start()

    @classmethod
    def from_config(cls, runtime_dir: Path, table: RouteTable, config: Config) -> PollTransport:
        return cls(runtime_dir, table, config.poll_idle_us)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if platform.machine() not in ("x86_64", "AMD64"):
            return f"the poll rings rely on x86-64 memory ordering; this is {platform.machine()}"
        return None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_segments": {}}

    def node_info(self) -> dict[str, Any]:
        """``rings``: each segment's name -> the endpoints it holds rings between, in order."""
        return {"rings": {self.ring_names[d]: list(members) for d, members in self.layout.items()},
                "idle_us": self.idle_us}

    def shm_names(self) -> list[str]:
        return list(self.ring_names.values())

    def shared_domain(self, a: int, b: int) -> int | None:
        """The domain whose segment holds the rings between ``a`` and ``b``; None: no ring."""
        da, db = self.domain_of.get(a), self.domain_of.get(b)
        if da is None or db is None or (da and db and da != db):
            return None
        return da or db

    def start(self) -> None:
        for domain, members in self.layout.items():
            size = len(members) * (LINE + len(members) * _RING_BYTES)
            self._segments[domain] = SharedMemory(self.ring_names[domain], create=True, size=size)

    def stop(self) -> None:
        """Idempotent; endpoints of this process should be closed first."""
        for segment in self._segments.values():
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()
            try:
                segment.close()
            except BufferError:  # a view kept alive by a garbage cycle: collect, retry
                gc.collect()
                with contextlib.suppress(BufferError):
                    segment.close()
        self._segments = {}
        for endpoint_id in self.endpoints:
            _wake_path(self.runtime_dir, endpoint_id).unlink(missing_ok=True)

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        if endpoint_id not in self.endpoints:
            raise ValueError(f"endpoint id {endpoint_id} is not one of this node's: {self.endpoints}")
        mine = self.domain_of[endpoint_id]  # a gateway's (0) reaches every domain: it maps every segment
        segments, opened = {}, []
        for domain in (self.layout if mine == 0 else (mine,)):
            segment = self._segments.get(domain)
            if segment is None:  # another process: map it (a worker, its own domain's only)
                segment = SharedMemory(self.ring_names[domain])
                opened.append(segment)
            segments[domain] = segment
        endpoint = _PollEndpoint(self, segments, endpoint_id, on_receive, opened)
        endpoint.open()
        return endpoint


def _domain(table: RouteTable, endpoint: int) -> int:
    function_id = table.function_of(endpoint)
    return table.functions[function_id - 1].domain if function_id else 0


def ring_layout(table: RouteTable) -> dict[int, tuple[int, ...]]:
    """Security domain -> the endpoints its segment holds rings between, in order: domain 0's,
    those of domain 0 (the gateways); each function domain's, domain 0's then its own."""
    hubs = [e for e in table.endpoints if not _domain(table, e)]
    layout: dict[int, list[int]] = {0: hubs}
    for endpoint in table.endpoints:
        if domain := _domain(table, endpoint):
            layout.setdefault(domain, list(hubs)).append(endpoint)
    return {domain: tuple(members) for domain, members in layout.items()}


def _wake_path(runtime_dir: Path, endpoint_id: int) -> Path:
    return runtime_dir / f"wake-{endpoint_id}.sock"


class _Rings:
    """Offsets into one segment: receiver r's control line and its ring from sender s (indices
    into the segment's endpoints, ``ring_layout``)."""

    def __init__(self, buffer: memoryview, count: int) -> None:
        self.buffer = buffer
        self.words = buffer.cast("Q")
        self.count = count
        self._block = LINE + count * _RING_BYTES

    def control(self, receiver: int) -> int:
        """Word index of receiver's ``sleeping``; ``attached`` is the next word."""
        return receiver * self._block // 8

    def ring(self, receiver: int, sender: int) -> tuple[int, int, int]:
        """(tail word, head word, first record byte) of the ring sender -> receiver."""
        start = receiver * self._block + LINE + sender * _RING_BYTES
        return start // 8, (start + LINE) // 8, start + 2 * LINE


class _PollEndpoint(Endpoint):
    def __init__(self, owner: PollTransport, segments: dict[int, SharedMemory], endpoint_id: int,
                 on_receive: Receiver, opened: list[SharedMemory]) -> None:
        """``segments``: domain -> the ring segments this endpoint is in; ``opened``: those it
        mapped itself (closed with it)."""
        self._owner = owner
        self._opened = opened
        self._id = endpoint_id
        self._on_receive = on_receive
        self._loop = asyncio.get_running_loop()
        self._domains = owner.domains
        self._idle_ns = None if owner.idle_us is None else owner.idle_us * 1000
        self._views: list[_Rings] = []
        self._controls: list[tuple[memoryview, int]] = []  # (words, its sleeping word): a copy per segment
        # (words, buffer, tail word, head word, first record byte): each ring to us
        self._incoming: list[tuple[memoryview, memoryview, int, int, int]] = []
        # receiver -> (words, buffer, its sleeping word, tail word, head word, first record byte)
        self._outgoing: dict[int, tuple[memoryview, memoryview, int, int, int, int]] = {}
        for domain, segment in segments.items():
            assert segment.buf is not None
            members = owner.layout[domain]
            rings = _Rings(segment.buf, len(members))
            self._views.append(rings)
            words, me = rings.words, members.index(endpoint_id)
            self._controls.append((words, rings.control(me)))
            for index, other in enumerate(members):
                if owner.shared_domain(endpoint_id, other) != domain:
                    continue  # two gateways: their rings are domain 0's segment's
                self._incoming.append((words, rings.buffer, *rings.ring(me, index)))
                self._outgoing[other] = (words, rings.buffer, rings.control(index), *rings.ring(index, me))
        self._waiting: dict[int, deque[bytes]] = {}  # receiver -> what did not fit its ring yet
        self._retry: asyncio.Handle | None = None
        self._poller: asyncio.Handle | None = None
        self._last_seen = time.monotonic_ns()
        self._wake: socket.socket | None = None  # adaptive mode: where senders ring us
        self._bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # how we ring others
        self._bell.setblocking(False)
        self._closed = False

    def open(self) -> None:
        for words, _, tail, head, _ in self._incoming:  # descriptors sent while nobody was attached are lost
            words[head] = words[tail]
        if self._idle_ns is not None:
            path = _wake_path(self._owner.runtime_dir, self._id)
            path.unlink(missing_ok=True)
            self._wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._wake.bind(str(path))
            self._owner.grant(path)
            self._wake.setblocking(False)
        for words, control in self._controls:
            words[control] = 0  # not sleeping
            words[control + 1] = 1  # attached
        self._poller = self._loop.call_soon(self._poll)

    # -- receiving -------------------------------------------------------------------------
    def _drain(self) -> bool:
        got = []
        for words, buffer, tail_word, head_word, base in self._incoming:
            head = words[head_word]
            count = words[tail_word] - head
            if not count:
                continue
            start = head % CAPACITY
            if start + count <= CAPACITY:
                got.append(bytes(buffer[base + start * RECORD : base + (start + count) * RECORD]))
            else:  # wraps around
                got.append(bytes(buffer[base + start * RECORD : base + CAPACITY * RECORD]))
                got.append(bytes(buffer[base : base + (start + count - CAPACITY) * RECORD]))
            words[head_word] = head + count  # frees the space: the records were copied out above
        if got:
            self._on_receive(got[0] if len(got) == 1 else b"".join(got))
        return bool(got)

    def _poll(self) -> None:
        self._poller = None
        if self._closed:
            return
        if self._drain():
            self._last_seen = time.monotonic_ns()
        elif self._idle_ns is not None and time.monotonic_ns() - self._last_seen > self._idle_ns:
            self._sleep()
            return
        self._poller = self._loop.call_soon(self._poll)

    def _sleep(self) -> None:
        """Tell senders to ring, look once more, then wait for the bell."""
        self._set_sleeping(1)
        _fence()
        if self._drain():
            self._set_sleeping(0)
            self._last_seen = time.monotonic_ns()
            self._poller = self._loop.call_soon(self._poll)
            return
        assert self._wake is not None
        self._loop.add_reader(self._wake.fileno(), self._woken)

    def _woken(self) -> None:
        assert self._wake is not None
        self._loop.remove_reader(self._wake.fileno())
        with contextlib.suppress(BlockingIOError):
            while self._wake.recv(64):
                pass
        self._set_sleeping(0)
        self._last_seen = time.monotonic_ns()
        self._poll()

    def _set_sleeping(self, value: int) -> None:
        for words, control in self._controls:
            words[control] = value

    # -- sending ---------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        for dest, batch in self._domains.split(self._id, data).items():
            queue = self._waiting.get(dest)
            if queue:
                queue.append(batch)  # behind what is already waiting: order kept
            elif rest := self._push(dest, batch):
                self._waiting[dest] = deque((rest,))
                self._schedule_retry()

    def _push(self, dest: int, batch: bytes) -> bytes:
        """Append what fits of ``batch`` to the ring to ``dest``; returns the rest."""
        ring = self._outgoing.get(dest)
        if ring is None:
            return b""  # no ring to it: Domains.split never sends there (refused: back to us)
        words, buffer, control, tail_word, head_word, base = ring
        if not words[control + 1]:
            return b""  # nobody attached: lost, as on the kernel's data plane
        tail = words[tail_word]
        count = min(len(batch) // RECORD, CAPACITY - (tail - words[head_word]))
        if not count:
            return batch
        start = tail % CAPACITY
        first = min(count, CAPACITY - start)
        buffer[base + start * RECORD : base + (start + first) * RECORD] = batch[: first * RECORD]
        if first < count:
            buffer[base : base + (count - first) * RECORD] = batch[first * RECORD : count * RECORD]
        words[tail_word] = tail + count  # publishes the records written above
        if self._idle_ns is not None:  # the receiver may be going to sleep: see the module's doc
            _fence()
            if words[control]:
                with contextlib.suppress(OSError):  # a full bell queue already rings
                    self._bell.sendto(b"\0", self._owner.path(_wake_path(Path(), dest).name))
        return batch[count * RECORD :]

    def _schedule_retry(self) -> None:
        if self._retry is None:
            self._retry = self._loop.call_soon(self._flush_waiting)

    def _flush_waiting(self) -> None:
        """Whatever waits for room in a full ring, in order (a busy receiver frees it soon)."""
        self._retry = None
        for dest, queue in list(self._waiting.items()):
            while queue:
                rest = self._push(dest, queue[0])
                if rest:
                    queue[0] = rest
                    break
                queue.popleft()
            if not queue:
                del self._waiting[dest]
        if self._waiting and not self._closed:
            self._schedule_retry()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for words, control in self._controls:
            words[control + 1] = 0
        if self._poller is not None:
            self._poller.cancel()
        if self._retry is not None:
            self._retry.cancel()
        if self._wake is not None:
            self._loop.remove_reader(self._wake.fileno())
            self._wake.close()
            with contextlib.suppress(PermissionError):  # a worker that dropped its privileges: see unix.py
                _wake_path(self._owner.runtime_dir, self._id).unlink(missing_ok=True)
        self._bell.close()
        self._incoming, self._outgoing, self._controls = [], {}, []
        for rings in self._views:
            rings.words.release()  # our view; the segment's own buffer is its owner's to close
        for segment in self._opened:
            segment.close()
