"""Which endpoints serve each function right now: its live instances.

A function may run as several instances, each a worker process with an endpoint of its own
(``RouteTable.instance_endpoints``). Requests and calls name the function; the data plane
picks the instance. The live set lives in a small file in the node's runtime directory,
mapped by every process of the node: per function, how many instances are live and their
endpoint ids. The first gateway's membership (spright.front.membership) writes it, through
``Transport.set_live`` (the ids first, then the count, so a reader never sees a count of ids
not yet written); userspace data planes read it for every request and call descriptor
(every function may have several instances: a second revision slot's, at least), and pick one (``balance``): round
robin, or the live instance with the fewest handlers running or waiting, as each worker
writes that figure in its row of the counter table (``watch``), plus what this process sent
it since the worker last read its queue (its count of received descriptors moved). skmsg's
kernel program keeps the same set in a BPF map (``Transport.instances_changed``) and counts
what is in flight itself.

A live set may be split in two groups (a canary rollout: spright.front.membership decides):
the stable instances and the canary ones, which get ``share`` percent of the picks. A pick
chooses the group first, by a stride per function and process (of every 100 picks, exactly
``share`` go to the canary, whichever process picks), then the instance within it as above.
A group of its own is all there is while the other is empty. One header word per function
holds both groups' counts and the share, written after the ids: a reader sees the old split
or the new one, never a count of ids not yet written.

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
from spright.data.table import REVISION_SLOTS, RouteTable

FILE_NAME = "instances"
_WORD = struct.Struct("<I")
# A function's header word: the stable group's count, the canary's above it, the share on top.
# skmsg's kernel map holds the same word (spright.transport.skmsg_maps, ebpf/skmsg.c).
GROUP_BITS = 12  # a count: at most 4095 instances per function
GROUP_MASK = (1 << GROUP_BITS) - 1
SHARE_SHIFT = 2 * GROUP_BITS


def header(stable: int, canary: int, share: int) -> int:
    """The word that says how many instances each group holds and the canary's share (0 when
    it has none: the word of an unsplit set is its count)."""
    return stable | canary << GROUP_BITS | (share if canary else 0) << SHARE_SHIFT


class LiveInstances:
    """Per function id: ``[header, stable ids ..., canary ids ...]`` in u32 words, each group
    room for all of the function's endpoints; then each revision slot's revision number."""

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        self.path = runtime_dir / FILE_NAME
        self._offsets: dict[int, int] = {}  # function id -> word offset of its header
        self._capacity: dict[int, int] = {}  # function id -> room for ids in each group
        self._next: dict[int, int] = {}  # function id -> where this process's round robin is
        self._next_canary: dict[int, int] = {}  # the same in the canary group
        self._drawn: dict[int, int] = {}  # function id -> picks of a split set, for the stride
        words = 0
        for f in table.functions:  # each has two revision slots' endpoints, so may have several instances
            capacity = len(table.instance_endpoints(f.id))
            self._offsets[f.id], self._capacity[f.id] = words, capacity
            words += 1 + 2 * capacity
        self.balance = BALANCES[0]
        # endpoint -> (descriptors it received so far, its handlers in flight)
        self._in_flight: Callable[[int], tuple[int, int]] | None = None
        self._seen: dict[int, int] = {}  # endpoint -> its received count when last read here
        self._sent: dict[int, int] = {}  # endpoint -> picks since that count last moved
        # then per function and revision slot (RouteTable.slot_endpoints): the number of the
        # revision it runs (spright.node.revisions), 0 while none does; for /metrics
        self._revisions = words
        self._functions = len(table.functions)
        self._words_total = words + REVISION_SLOTS * len(table.functions)
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

    def open(self) -> None:
        """Map the file now (a worker, before it drops its privileges: the file is root's, 0600)."""
        self._words()

    def _words(self) -> mmap.mmap:
        if self._map is None:
            with self.path.open("r+b") as file:
                self._map = mmap.mmap(file.fileno(), 0)
        return self._map

    def set(self, function_id: int, endpoints: Sequence[int], canary: Sequence[int] = (), share: int = 0) -> None:
        """The live instances of ``function_id`` are now ``endpoints`` and ``canary``, which
        gets ``share`` percent (0..100) of the picks while ``endpoints`` has any."""
        capacity = self._capacity[function_id]
        if not 0 <= share <= 100 or len(endpoints) > capacity or len(canary) > capacity \
                or set(endpoints) & set(canary):
            raise ValueError(f"not a split of function {function_id}'s {capacity} instances: "
                             f"{tuple(endpoints)}, {tuple(canary)} at {share}%")
        words, base = self._words(), self._offsets[function_id]
        for i, endpoint in enumerate(endpoints):
            _WORD.pack_into(words, 4 * (base + 1 + i), endpoint)
        for i, endpoint in enumerate(canary):
            _WORD.pack_into(words, 4 * (base + 1 + capacity + i), endpoint)
        _WORD.pack_into(words, 4 * base, header(len(endpoints), len(canary), share))

    def set_revision(self, function_id: int, slot: int, number: int) -> None:
        """Revision ``number`` runs in ``function_id``'s slot ``slot`` now."""
        _WORD.pack_into(self._words(), 4 * (self._revisions + REVISION_SLOTS * (function_id - 1) + slot), number)

    def revisions(self) -> list[tuple[int, ...]]:
        """Per function (index: its id - 1), the revision number of each slot (0: none)."""
        words = struct.unpack_from(f"<{REVISION_SLOTS * self._functions}I", self._words(), 4 * self._revisions)
        return [words[i : i + REVISION_SLOTS] for i in range(0, len(words), REVISION_SLOTS)]

    def get(self, function_id: int) -> tuple[int, ...]:
        """The live instances of ``function_id``, both groups."""
        stable, canary, _ = self.split(function_id)
        return tuple(sorted(stable + canary)) if canary else stable

    def split(self, function_id: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """The live instances of ``function_id`` as (stable, canary, the canary's share)."""
        words, base = self._words(), self._offsets[function_id]
        (word,) = _WORD.unpack_from(words, 4 * base)
        stable, canary = word & GROUP_MASK, word >> GROUP_BITS & GROUP_MASK
        return (struct.unpack_from(f"<{stable}I", words, 4 * (base + 1)),
                struct.unpack_from(f"<{canary}I", words, 4 * (base + 1 + self._capacity[function_id])),
                word >> SHARE_SHIFT)

    def pick(self, function_id: int) -> int:
        """The instance of ``function_id`` that gets the next descriptor (see ``balance``);
        the first gateway, the activator (spright.front.activator), when none is live."""
        words, base = self._words(), self._offsets[function_id]
        (count,) = _WORD.unpack_from(words, 4 * base)
        turns = self._next
        if count > GROUP_MASK:  # a split set: which group first
            base, count, turns = self._group(function_id, base, count)
        if not count:
            return GATEWAY
        live = struct.unpack_from(f"<{count}I", words, 4 * (base + 1))
        turn = turns.get(function_id, 0)
        turns[function_id] = turn + 1
        first = live[turn % count]
        if self._in_flight is None or self.balance != "least_in_flight" or count == 1:
            return first
        pick, least = first, self._load(first)
        for endpoint in live:
            if least and endpoint != first and (load := self._load(endpoint)) < least:
                pick, least = endpoint, load
        self._sent[pick] += 1
        return pick

    def _group(self, function_id: int, base: int, word: int) -> tuple[int, int, dict[int, int]]:
        """The group of a split set this pick goes to, as (its ids' offset less one, its count,
        its round robin): the canary when the stable group is empty, and for pick n when the
        stride crosses a multiple of 100 (n * share % 100 >= 100 - share), ``share`` in 100."""
        stable, share = word & GROUP_MASK, word >> SHARE_SHIFT
        drawn = self._drawn.get(function_id, 0)
        self._drawn[function_id] = drawn + 1
        if stable and drawn * share % 100 < 100 - share:
            return base, stable, self._next
        return base + self._capacity[function_id], word >> GROUP_BITS & GROUP_MASK, self._next_canary

    def _load(self, endpoint: int) -> int:
        """Handlers in flight at ``endpoint`` as its worker last wrote, plus what this process
        picked it for since the worker last read its queue."""
        assert self._in_flight is not None
        received, in_flight = self._in_flight(endpoint)
        if self._seen.get(endpoint) != received:
            self._seen[endpoint], self._sent[endpoint] = received, 0
        return in_flight + self._sent[endpoint]
