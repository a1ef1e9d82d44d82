"""Shared-memory slot pool: payloads are written once and read in place by every hop.

Slots come in size classes (one ``SharedMemory`` segment per class) so a 20-byte request
does not pin 8 MiB. A control segment holds, per slot, a generation (bumped on every
allocation, so a late reply for a reused slot is detected), the owning request id (so slots
of requests that ended badly can be swept) and its holder: the endpoint whose handler runs
on it right now. A sweep never frees a held
slot, so a handler that outlives its request (it ignored its cancellation) cannot write into
a slot already reused by another request; the holder lets go when it hands the slot on, or
when its worker dies. Plus one free stack per class. Any process of the node may allocate
and free; a cross-process lock guards the control segment for the microseconds each takes.

A slot's bytes: ``[payload ... | meta | meta_len u32]`` — the payload starts at offset 0
(so hops work on it in place and can grow it), request/response metadata sits at the tail.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import secrets
import struct
from bisect import bisect_left, bisect_right
from multiprocessing import get_context, resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple, Protocol

from spright.data.config import PoolConfig
from spright.data.descriptor import GATEWAY_SHIFT

__all__ = ["Payload", "Payloads", "Pool", "PoolExhausted", "Slot", "TooLarge", "read_meta"]

Payload = bytes | bytearray | memoryview  # what a slot's payload may be written from

# a slot id: [domain: 4 bits][size class: 4 bits][index in its class: 24 bits]
DOMAIN_SHIFT = 28
CLASS_SHIFT = 24
CLASS_MASK = 0xF
INDEX_MASK = (1 << CLASS_SHIFT) - 1
MAX_DOMAINS = 1 << (32 - DOMAIN_SHIFT)
META_LEN = struct.Struct("<I")


class Slot(NamedTuple):
    id: int
    generation: int


_slot = functools.partial(tuple.__new__, Slot)  # Slot(id, generation) without a Python call


class PoolHandle(NamedTuple):
    """What a worker process needs to attach to the pool (picklable at spawn)."""

    prefix: str
    config: PoolConfig
    lock: Any
    domain: int  # the security domain whose payloads this pool holds (in every slot id it hands out)


class Payloads(Protocol):
    """Where a process's payloads are read and written by slot id: a worker's ``Pool``, or the
    gateway's ``NodePool`` (every domain's); what a data plane that moves bytes needs."""

    def is_current(self, slot: int, generation: int) -> bool: ...

    def view(self, slot: int) -> memoryview: ...

    def write(self, slot: int, generation: int, payload: Payload, meta: bytes | None, owner: int) -> Slot: ...


def attach_segment(name: str, tracked: bool = True) -> SharedMemory:
    """An existing shared-memory segment. Python registers it with this process's resource
    tracker, which unlinks it once the process ends. A worker spawned by ``spright run`` shares
    its supervisor's tracker, the owner's safety net; a worker started on its own (``spright
    worker``) has a tracker of its own, which would unlink the node's pool when that worker
    dies: it attaches ``tracked=False``."""
    segment = SharedMemory(name)
    if not tracked:
        resource_tracker.unregister(f"/{segment.name}", "shared_memory")
    return segment


class PoolExhausted(Exception):
    """No free slot of a fitting size: the gateway answers 503."""


class TooLarge(ValueError):
    """No slot of the pool is that large (``size``: payload and metadata; ``largest``: the
    largest slot's bytes): the caller says which limit to raise."""

    def __init__(self, size: int, largest: int) -> None:
        super().__init__(f"{size} bytes exceed the pool's largest slot ({largest} bytes)")
        self.size = size
        self.largest = largest


class Pool:
    def __init__(self, handle: PoolHandle, create: bool, tracked: bool = True) -> None:
        self.handle = handle
        self._tracked = tracked
        self.config = handle.config
        self.domain = handle.domain
        self._id_base = handle.domain << DOMAIN_SHIFT
        self._lock = handle.lock._semlock  # the C lock itself: its with-statement skips a Python wrapper
        self.classes = handle.config.size_classes()
        self.total = sum(count for _, count in self.classes)
        self._capacities = [size for size, _ in self.classes]
        self._nclasses = len(self.classes)
        # control: generation[total], owner[total], holder[total], then per class: top + stack[count]
        ctl_words = 3 * self.total + sum(1 + count for _, count in self.classes)
        self._segments: list[SharedMemory] = []
        self._owner_segments = create
        ctl = self._segment("ctl", ctl_words * 4, create)
        words = self._words = ctl.cast("I")
        self._generation = words[: self.total]
        self._owner = words[self.total : 2 * self.total]
        self._holder = words[2 * self.total : 3 * self.total]  # endpoint id + 1; 0: nobody
        self._base: list[int] = []  # global index of each class's slot 0
        self._stacks: list[memoryview] = []
        self._views: list[memoryview] = []
        offset, base = 3 * self.total, 0
        for number, (size, count) in enumerate(self.classes):
            self._base.append(base)
            self._stacks.append(words[offset : offset + 1 + count])
            self._views.append(self._segment(str(number), size * count, create))
            offset += 1 + count
            base += count
        if create:
            for stack in self._stacks:
                count = len(stack) - 1
                stack[0] = count
                for i in range(count):
                    stack[1 + i] = count - 1 - i  # pop order: 0, 1, 2...

    @classmethod
    def create(cls, config: PoolConfig | None = None, domain: int = 1) -> Pool:
        """A new pool for security domain ``domain`` (1..15), under an unguessable name."""
        if not 0 < domain < MAX_DOMAINS:
            raise ValueError(f"a pool's domain must be 1..{MAX_DOMAINS - 1}, got {domain}")
        prefix = f"spright-{secrets.token_hex(16)}"
        return cls(PoolHandle(prefix, config or PoolConfig(), get_context("spawn").Lock(), domain), True)

    @classmethod
    def attach(cls, handle: PoolHandle, *, tracked: bool = True) -> Pool:
        """``tracked``: see ``attach_segment``."""
        return cls(handle, False, tracked)

    def _segment(self, suffix: str, size: int, create: bool) -> memoryview:
        """The bytes of segment ``<prefix>-<suffix>`` (created, or attached)."""
        name = f"{self.handle.prefix}-{suffix}"
        segment = SharedMemory(name, create=True, size=size) if create else attach_segment(name, self._tracked)
        self._segments.append(segment)
        assert segment.buf is not None  # None only once closed
        return segment.buf

    @property
    def segment_names(self) -> list[str]:
        return [segment.name for segment in self._segments]

    def alloc(self, size: int, owner: int) -> Slot:
        """A slot whose capacity holds ``size`` bytes; raises PoolExhausted or TooLarge."""
        number = bisect_left(self._capacities, size)
        classes = self._nclasses
        if number == classes:
            raise TooLarge(size, self._capacities[-1])
        stacks, generations = self._stacks, self._generation
        with self._lock:
            while number < classes:  # fall back to a larger class when one is full
                stack = stacks[number]
                top = stack[0]
                if top:
                    stack[0] = top - 1
                    local = stack[top]
                    index = self._base[number] + local
                    generation = generations[index] = (generations[index] + 1) & 0xFFFFFFFF
                    self._owner[index] = owner
                    return _slot((self._id_base | (number << CLASS_SHIFT) | local, generation))
                number += 1
        raise PoolExhausted(f"no free slot of {size} bytes or more")

    def _index(self, slot: int) -> int | None:
        """Where ``slot``'s generation and owner are kept; None for an id that names no slot
        (a descriptor from a buggy or hostile function must not reach a neighbour's), or one
        of another domain's pool."""
        number, local = (slot >> CLASS_SHIFT) & CLASS_MASK, slot & INDEX_MASK
        if slot >> DOMAIN_SHIFT != self.domain or number >= self._nclasses or local >= self.classes[number][1]:
            return None
        return self._base[number] + local

    def free(self, slot: int, generation: int) -> bool:
        """Return a slot; False (and nothing done) if it was already freed or reused, or is no slot."""
        index = self._index(slot)
        if index is None:
            return False
        owners = self._owner
        with self._lock:
            if self._generation[index] != generation or not owners[index]:
                return False
            owners[index] = 0
            self._holder[index] = 0
            stack = self._stacks[(slot >> CLASS_SHIFT) & CLASS_MASK]
            top = stack[0] = stack[0] + 1
            stack[top] = slot & INDEX_MASK
            return True

    def hold(self, slot: int, generation: int, holder: int) -> bool:
        """Mark a slot as being written by endpoint ``holder`` (no sweep frees it until
        ``unhold``), if it still is that generation's; False (nothing done) if not."""
        index = self._index(slot)
        if index is None:
            return False
        with self._lock:
            if self._generation[index] != generation or not self._owner[index]:
                return False
            self._holder[index] = holder + 1
            return True

    def unhold(self, slot: int) -> None:
        """The holder is done writing the slot (and hands it on, or has freed it)."""
        index = self._index(slot)
        if index is not None:
            self._holder[index] = 0

    def release_holds(self, holder: int) -> list[tuple[int, int, int]]:
        """Every hold of endpoint ``holder`` (its worker died: it writes nothing any more);
        returns (slot, generation, owner) of each slot it held: the work it was doing."""
        released = []
        with self._lock:
            for index, value in enumerate(self._holder):
                if value == holder + 1:
                    self._holder[index] = 0
                    released.append((self._slot_id(index), self._generation[index], self._owner[index]))
        return released

    def _slot_id(self, index: int) -> int:
        number = bisect_right(self._base, index) - 1
        return self._id_base | (number << CLASS_SHIFT) | (index - self._base[number])

    def is_current(self, slot: int, generation: int) -> bool:
        index = self._index(slot)
        return index is not None and self._generation[index] == generation and self._owner[index] != 0

    def view(self, slot: int) -> memoryview:
        """The slot's whole capacity, writable, shared with every process of the node."""
        number, local = (slot >> CLASS_SHIFT) & CLASS_MASK, slot & INDEX_MASK
        size = self.classes[number][0]
        return self._views[number][local * size : (local + 1) * size]

    def read(self, slot: int, length: int) -> bytes:
        """A copy of the first ``length`` bytes of a slot."""
        number = (slot >> CLASS_SHIFT) & CLASS_MASK
        start = (slot & INDEX_MASK) * self._capacities[number]
        return bytes(self._views[number][start : start + length])

    def take(self, slot: int, generation: int, length: int) -> bytes | None:
        """A copy of the first ``length`` bytes, and the slot back to the pool, in one step;
        None (and nothing freed) if the slot is no longer that generation's, or ``length``
        runs past it."""
        if not self.is_current(slot, generation) or length > self._capacities[(slot >> CLASS_SHIFT) & CLASS_MASK]:
            return None
        data = self.read(slot, length)
        return data if self.free(slot, generation) else None

    def capacity(self, slot: int) -> int:
        return self.classes[(slot >> CLASS_SHIFT) & CLASS_MASK][0]

    # -- the slot layout: [payload ... | meta | meta_len u32] ---------------------------------
    def write(self, slot: int, generation: int, payload: Payload, meta: bytes | None, owner: int,
              keep: bool = False) -> Slot:
        """``payload`` at the slot's start and ``meta`` at its tail (None: keep the slot's
        meta), in this slot when both fit, else in a larger one (this one freed unless
        ``keep``, ``owner`` owning the new one). Returns the slot that holds them. Raises
        PoolExhausted, or TooLarge when no slot is large enough."""
        number = (slot >> CLASS_SHIFT) & CLASS_MASK
        size = self._capacities[number]
        start = (slot & INDEX_MASK) * size
        buffer = self._views[number]
        tail = start + size - META_LEN.size  # where meta_len sits; the meta ends here
        kept = META_LEN.unpack_from(buffer, tail)[0] if meta is None else len(meta)
        if len(payload) + kept + META_LEN.size > size:
            if meta is None:
                meta = bytes(buffer[tail - kept : tail])
            moved = self.put(payload, meta, owner)
            if not keep:
                self.free(slot, generation)
            return moved
        if meta is not None:
            buffer[tail - kept : tail] = meta
            META_LEN.pack_into(buffer, tail, kept)
        buffer[start : start + len(payload)] = payload
        return _slot((slot, generation))

    def put(self, payload: Payload, meta: bytes, owner: int) -> Slot:
        """A new slot holding ``payload`` and ``meta``, owned by request ``owner``."""
        slot = self.alloc(len(payload) + len(meta) + META_LEN.size, owner)
        return self.write(slot.id, slot.generation, payload, meta, owner)

    def set_meta(self, slot: Slot, used: int, meta: bytes, owner: int) -> Slot:
        """``meta`` at the tail of a slot whose first ``used`` bytes hold the payload, moving
        both to a larger slot when they do not fit together (see ``write``)."""
        number = (slot[0] >> CLASS_SHIFT) & CLASS_MASK
        size = self._capacities[number]
        length = len(meta)
        if used + length + META_LEN.size > size:
            slot = self.grow(slot, used, used + length + META_LEN.size, owner)
            number = (slot[0] >> CLASS_SHIFT) & CLASS_MASK
            size = self._capacities[number]
        tail = ((slot[0] & INDEX_MASK) + 1) * size - META_LEN.size
        buffer = self._views[number]
        buffer[tail - length : tail] = meta
        META_LEN.pack_into(buffer, tail, length)
        return slot

    def grow(self, slot: Slot, used: int, size: int, owner: int) -> Slot:
        """A slot of at least ``size`` bytes holding this one's first ``used`` bytes; this one freed."""
        bigger = self.alloc(size, owner)
        with self.view(bigger.id) as target, self.view(slot.id) as source:
            target[:used] = source[:used]
        self.free(*slot)
        return bigger

    def in_use(self) -> int:
        return sum(count - stack[0] for (_, count), stack in zip(self.classes, self._stacks, strict=True))

    def sweep(self, live_owners: set[int], gateway: int = 0) -> int:
        """Free every slot owned by a request of ``gateway`` (its id's top bits) that is no
        longer live and held by no endpoint; returns how many."""
        freed = 0
        holders = self._holder
        for number, (_, count) in enumerate(self.classes):
            base = self._base[number]
            for local in range(count):
                owner = self._owner[base + local]
                if (owner and owner >> GATEWAY_SHIFT == gateway and owner not in live_owners
                        and not holders[base + local]):
                    freed += self.free(self._id_base | (number << CLASS_SHIFT) | local, self._generation[base + local])
        return freed

    def close(self) -> None:
        """Detach; the creating process also unlinks the segments.

        Unlinking comes first so that a view still held somewhere cannot leak a segment.
        """
        for segment in self._segments:
            if self._owner_segments:
                segment.unlink()
        for view in (self._generation, self._owner, self._holder, *self._stacks, self._words):
            view.release()
        self._stacks.clear()
        self._views.clear()
        for segment in self._segments:
            try:
                segment.close()
            except BufferError:  # views kept alive by garbage cycles (tracebacks): collect, retry
                gc.collect()
                with contextlib.suppress(BufferError):
                    segment.close()
        self._segments.clear()


def read_meta(view: memoryview) -> memoryview:
    """The metadata at the tail of a slot's view (a view too: release it, or let it go)."""
    end = len(view) - META_LEN.size
    (length,) = META_LEN.unpack_from(view, end)
    return view[end - length : end]

