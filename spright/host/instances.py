"""Which endpoints serve each function right now: its live instances.

A function may run as several instances, each a worker process with an endpoint of its own
(``RouteTable.instance_endpoints``). Requests and calls name the function; the data plane
picks the instance. The live set lives in a small file in the node's runtime directory,
mapped by every process of the node: per function, how many instances are live and their
endpoint ids. The first gateway's membership (spright.front.membership) writes it, through
``Transport.set_live`` (the ids first, then the count, so a reader never sees a count of ids
not yet written); userspace data planes read it for every descriptor
bound to a function that may have more than one instance, and pick one (``balance``): round
robin, or the live instance with the fewest handlers running or waiting, as each worker
writes that figure in its row of the counter table (``watch``), plus what this process sent
it since the worker last read its queue (its count of received descriptors moved). skmsg's
kernel program keeps the same set in a BPF map (``Transport.instances_changed``) and counts
what is in flight itself.

Every set starts empty. An instance joins it once it has announced itself and leaves it before
it is stopped (it drains what it was given), so a request is never sent to an instance that is
not serving. While the set is empty (scaled to zero, or every instance crashed), the first
gateway's activator gets what is addressed to the function.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from spright.data.config import BALANCES
from spright.data.descriptor import GATEWAY
from spright.data.table import RouteTable

FILE_NAME = "instances"
_WORD = struct.Struct("<I")


class LiveInstances:
    """Per function id: ``[count, endpoint ids ...]`` in u32 words, for every function that
    may have more than one instance (the others are always served by their own endpoint)."""

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        self.path = runtime_dir / FILE_NAME
        self._offsets: dict[int, int] = {}  # function id -> word offset of its count
        self._next: dict[int, int] = {}  # function id -> where this process's round robin is
        words = 0
        for f in table.functions:
            if len(table.instance_endpoints(f.id)) > 1 or f.scales_to_zero:
                self._offsets[f.id] = words
                words += 1 + len(table.instance_endpoints(f.id))
        self.scalable = frozenset(self._offsets)  # functions that may have several instances, or none
        self.balance = BALANCES[0]
        # endpoint -> (descriptors it received so far, its handlers in flight)
        self._in_flight: Callable[[int], tuple[int, int]] | None = None
        self._seen: dict[int, int] = {}  # endpoint -> its received count when last read here
        self._sent: dict[int, int] = {}  # endpoint -> picks since that count last moved
        self._words_total = words
        self._map: mmap.mmap | None = None

    def create(self) -> None:
        """The node's file, every live set empty (an instance joins once it is ready:
        spright.front.membership); by the first gateway's process, before the data plane starts."""
        self.path.write_bytes(bytes(4 * max(self._words_total, 1)))
        self.path.chmod(0o600)

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_map": None, "_in_flight": None}  # each process maps the file itself

    def watch(self, in_flight: Callable[[int], tuple[int, int]]) -> None:
        """Where this process reads, per endpoint, how many descriptors it received so far
        and its handlers in flight (for least_in_flight)."""
        self._in_flight = in_flight

    def _words(self) -> mmap.mmap:
        if self._map is None:
            with self.path.open("r+b") as file:
                self._map = mmap.mmap(file.fileno(), 0)
        return self._map

    def set(self, function_id: int, endpoints: Sequence[int]) -> None:
        """The live instances of ``function_id`` are now ``endpoints``."""
        words, base = self._words(), self._offsets[function_id]
        for i, endpoint in enumerate(endpoints):
            _WORD.pack_into(words, 4 * (base + 1 + i), endpoint)
        _WORD.pack_into(words, 4 * base, len(endpoints))

    def get(self, function_id: int) -> tuple[int, ...]:
        """The live instances of ``function_id`` (its own endpoint when it cannot have more)."""
        base = self._offsets.get(function_id)
        if base is None:
            return (function_id,)
        words = self._words()
        (count,) = _WORD.unpack_from(words, 4 * base)
        return struct.unpack_from(f"<{count}I", words, 4 * (base + 1))

    def pick(self, function_id: int) -> int:
        """The instance of ``function_id`` that gets the next descriptor (see ``balance``);
        the first gateway, the activator (spright.front.activator), when none is live."""
        live = self.get(function_id)
        if not live:
            return GATEWAY
        turn = self._next.get(function_id, 0)
        self._next[function_id] = turn + 1
        first = live[turn % len(live)]
        if self._in_flight is None or self.balance != "least_in_flight" or len(live) == 1:
            return first
        pick, least = first, self._load(first)
        for endpoint in live:
            if least and endpoint != first and (load := self._load(endpoint)) < least:
                pick, least = endpoint, load
        self._sent[pick] += 1
        return pick

    def _load(self, endpoint: int) -> int:
        """Handlers in flight at ``endpoint`` as its worker last wrote, plus what this process
        picked it for since the worker last read its queue."""
        assert self._in_flight is not None
        received, in_flight = self._in_flight(endpoint)
        if self._seen.get(endpoint) != received:
            self._seen[endpoint], self._sent[endpoint] = received, 0
        return in_flight + self._sent[endpoint]
