"""The span rings: one ring of span records (spright.data.traces.RECORD) per endpoint in
shared memory, written in place by its one writer on the hot path of traced requests and read
by the gateway (which assembles and exports traces) and by ``spright trace``.

Why rings and not messages: a traced request must cost its handlers next to nothing, so a
process never sends anything about a span; it packs one record into its own ring, and readers
come by later. A ring keeps the last ``capacity`` records: a reader that falls behind loses the
oldest (counted, never returned torn) rather than slowing a writer down.

Lifecycle as the counter table (spright.host.counters), and like it a segment per security
domain (``NodeSpans``): the supervisor creates the segments (per-run random names, mode 0600)
and unlinks them on shutdown; a worker attaches to its own domain's; other processes read
``/dev/shm/<name>`` directly, never through ``SharedMemory``, whose resource tracker would
unlink a segment it merely attached to.

A ring's layout: a u64 ``written`` (records ever written to it), then ``capacity + 1`` slots;
record ``i`` sits in slot ``i % (capacity + 1)``. The spare slot is the one the writer may be
rewriting right now, unbeknown to a reader (it counts a record only once it is whole): so the
last ``capacity`` records are always readable. Rings start on 64-byte boundaries, so two
writers never share the cache line of a header.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

from spright.data.traces import RECORD, RECORD_SIZE, Record, records
from spright.host.pool import attach_segment

HEADER = 8  # the ring's u64 ``written``
ALIGN = 64

Read = Callable[[int, int], bytes]  # (offset, length) -> a copy of those bytes of the segment


CAPACITY = 4096  # records a ring keeps (the gateway reads the rings at each traced answer)


def ring_bytes(capacity: int) -> int:
    """One ring's size: its header and slots, rounded up to the next ring's alignment."""
    return -(-(HEADER + (capacity + 1) * RECORD_SIZE) // ALIGN) * ALIGN


def segment_bytes(rings: int, capacity: int) -> int:
    return rings * ring_bytes(capacity)


class SpanWriter:
    """An endpoint's ring, written by that endpoint only: one writer, so no lock. It counts
    its records itself and only stores the count into the header, after the record, so a
    reader never counts a record before it is whole (loads and stores keep their order on
    x86-64, where the node runs: TSO)."""

    __slots__ = ("_header", "_records", "_slots", "_written")

    def __init__(self, header: memoryview, records: memoryview, slots: int) -> None:
        self._header = header  # the ring's ``written``, as one u64
        self._records = records
        self._slots = slots
        self._written: int = header[0]  # a restarted worker carries on where its ring stands

    def write(self, kind: int, sampled: int, endpoint: int, peer: int, hop: int, chain: int, status: int,
              request_id: int, call_id: int, t0: int, t1: int, t2: int, t3: int,
              trace_hi: int = 0, trace_lo: int = 0, parent_id: int = 0) -> None:
        """One record (the fields of spright.data.traces.Record, in order)."""
        written = self._written
        RECORD.pack_into(self._records, written % self._slots * RECORD_SIZE, kind, sampled, endpoint, peer, hop,
                         chain, status, request_id, call_id, t0, t1, t2, t3, trace_hi, trace_lo, parent_id)
        written += 1
        self._written = written
        self._header[0] = written


class SpanReader:
    """Reads every ring through ``read`` (a copy of the segment's bytes at an offset): a live
    table's memory, or the file of a segment in /dev/shm. A record is returned only if no
    writer can have been overwriting it while it was copied: ``written`` is read again after
    the copy, and what the writer may have reached meanwhile is counted lost instead (a
    reader that falls behind by more than ``capacity`` records loses the oldest too)."""

    def __init__(self, read: Read, rings: int, capacity: int) -> None:
        self._read = read
        self.rings = rings
        self.capacity = capacity
        self._stride = ring_bytes(capacity)
        # read_new's first call returns what was written after this reader was made
        self._seen = [self._written(ring) for ring in range(rings)]

    def _written(self, ring: int) -> int:
        return int.from_bytes(self._read(ring * self._stride, HEADER), "little")

    def _records(self, ring: int, start: int, end: int) -> tuple[list[Record], int]:
        """Records ``start`` to ``end`` (what the ring's header said was written, at most
        ``capacity`` back), whole ones only, and how many of them were not (overwritten while
        being copied)."""
        slots = self.capacity + 1
        base = ring * self._stride + HEADER
        first, count = start % slots, end - start
        head = min(count, slots - first)  # the copy wraps round the ring's end at most once
        data = self._read(base + first * RECORD_SIZE, head * RECORD_SIZE)
        if count > head:
            data += self._read(base, (count - head) * RECORD_SIZE)
        # Meanwhile the writer may have written up to ``written`` and be writing the next, over
        # record ``written - capacity - 1``: only the records after that one were copied whole.
        torn = min(count, max(0, self._written(ring) - self.capacity - start))
        return records(data[torn * RECORD_SIZE :]), torn

    def read_new(self) -> tuple[list[Record], int]:
        """The records written since the last call (ring by ring, each oldest first), and how
        many others were written but lost: overwritten before this call could read them."""
        found: list[Record] = []
        lost = 0
        for ring in range(self.rings):
            seen, written = self._seen[ring], self._written(ring)
            if written == seen:
                continue
            start = max(seen, written - self.capacity)
            records, torn = self._records(ring, start, written)
            found += records
            lost += start - seen + torn
            self._seen[ring] = written
        return found, lost

    def latest(self, n: int | None = None) -> list[Record]:
        """The last ``n`` records (at most a ring's capacity) of each ring, ring by ring,
        each oldest first, whether ``read_new`` returned them or not."""
        keep = self.capacity if n is None else max(0, min(n, self.capacity))
        found: list[Record] = []
        for ring in range(self.rings):
            written = self._written(ring)
            found += self._records(ring, max(0, written - keep), written)[0]
        return found


class SpanTable:
    """One ring per endpoint (ring index = endpoint id), in shared memory for a node, in
    private memory for the in-process TestClient."""

    def __init__(self, rings: int, capacity: int, segment: SharedMemory | None, owner: bool) -> None:
        if rings < 1 or capacity < 1:
            raise ValueError(f"a span table needs rings and room: got {rings} rings of {capacity} records")
        self.rings = rings
        self.capacity = capacity
        self._segment = segment
        self._owner = owner
        size = segment_bytes(rings, capacity)
        buffer = segment.buf if segment is not None else memoryview(bytearray(size))
        assert buffer is not None  # a SharedMemory's buf is None only once closed
        if segment is not None and len(buffer) < size:
            segment.close()
            raise ValueError(f"span segment {segment.name} holds {segment.size} bytes, not the {size} of {rings} "
                             f"rings of {capacity} records")
        self._buffer = buffer[:size]
        self._views: list[memoryview] = [self._buffer]  # every view handed out, released on close

    @classmethod
    def create(cls, rings: int, capacity: int = CAPACITY, *, shared: bool = True,
               name: str | None = None) -> SpanTable:
        """``shared``: a /dev/shm segment (POSIX shm is created with mode 0600) under ``name``
        or a fresh random one, for a node; otherwise plain memory, for the in-process TestClient."""
        if not shared:
            return cls(rings, capacity, None, True)
        segment = SharedMemory(name or f"spright-{secrets.token_hex(6)}-spans", create=True,
                               size=segment_bytes(rings, capacity))
        return cls(rings, capacity, segment, True)

    @classmethod
    def attach(cls, name: str, rings: int, capacity: int, *, tracked: bool = True) -> SpanTable:
        """Another process's attachment (``tracked``: see ``spright.host.pool.attach_segment``)."""
        return cls(rings, capacity, attach_segment(name, tracked), False)

    @property
    def name(self) -> str | None:
        return self._segment.name if self._segment is not None else None

    def writer(self, endpoint: int) -> SpanWriter:
        """The writer of ``endpoint``'s ring (only ever one at a time)."""
        if not 0 <= endpoint < self.rings:
            raise IndexError(f"endpoint {endpoint} has no ring (the table has {self.rings})")
        base = endpoint * ring_bytes(self.capacity)
        header = self._buffer[base : base + HEADER].cast("Q")
        records = self._buffer[base + HEADER : base + HEADER + (self.capacity + 1) * RECORD_SIZE]
        self._views += (header, records)
        return SpanWriter(header, records, self.capacity + 1)

    def reader(self) -> SpanReader:
        buffer = self._buffer
        return SpanReader(lambda offset, length: buffer[offset : offset + length].tobytes(), self.rings, self.capacity)

    def close(self) -> None:
        """Detach (its writers and readers stop working); the creator also unlinks (first, so
        a view held elsewhere cannot leak it)."""
        if self._segment is not None and self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._segment.unlink()
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        if self._segment is not None:
            self._segment.close()
            self._segment = None


@contextlib.contextmanager
def open_segment(name: str, rings: int, capacity: int) -> Iterator[SpanReader]:
    """A reader of another process's table (``spright trace``) that reads the segment's file
    in /dev/shm: no attachment, so no resource tracker to unlink it when this process ends."""
    fd = os.open(Path("/dev/shm", name), os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < segment_bytes(rings, capacity):
            raise ValueError(f"span segment {name} is smaller than {rings} rings of {capacity} records")
        yield SpanReader(lambda offset, length: os.pread(fd, length, offset), rings, capacity)
    finally:
        os.close(fd)


class SpanReaders:
    """Several tables' readers read as one: a node's rings, a table per security domain."""

    def __init__(self, readers: list[SpanReader]) -> None:
        self._readers = readers

    def read_new(self) -> tuple[list[Record], int]:
        """As ``SpanReader.read_new``, table by table."""
        found: list[Record] = []
        lost = 0
        for reader in self._readers:
            records, missed = reader.read_new()
            found += records
            lost += missed
        return found, lost

    def latest(self, n: int | None = None) -> list[Record]:
        """As ``SpanReader.latest``, table by table."""
        return [record for reader in self._readers for record in reader.latest(n)]


class NodeSpans:
    """A node's span rings: a table per security domain, a ring per endpoint of that domain
    (``layout``, as the counter table's: spright.host.counters.layout), so a worker maps its own
    domain's rings only; the gateways map every domain's and read them all. Records name their
    endpoint: which ring holds them matters to no reader."""

    def __init__(self, layout: Mapping[int, Sequence[int]], tables: Mapping[int, SpanTable], capacity: int) -> None:
        self.capacity = capacity
        self._tables = dict(tables)
        self._place = {e: (domain, i) for domain in self._tables for i, e in enumerate(layout[domain])}

    @classmethod
    def create(cls, layout: Mapping[int, Sequence[int]], capacity: int = CAPACITY, *, shared: bool = True,
               names: Mapping[int, str] | None = None) -> NodeSpans:
        """A table per domain of ``layout`` (``names``: each one's segment name; see ``SpanTable.create``)."""
        tables: dict[int, SpanTable] = {}
        try:
            for domain, endpoints in layout.items():
                name = names.get(domain) if names is not None else None
                tables[domain] = SpanTable.create(len(endpoints), capacity, shared=shared, name=name)
        except BaseException:
            for table in tables.values():
                table.close()
            raise
        return cls(layout, tables, capacity)

    @classmethod
    def attach(cls, layout: Mapping[int, Sequence[int]], names: Mapping[int, str], capacity: int = CAPACITY, *,
               tracked: bool = True) -> NodeSpans:
        """Another process's attachment to the tables ``names`` names (domain -> segment: a
        worker is handed its own domain's only). FileNotFoundError: the node does not trace."""
        tables: dict[int, SpanTable] = {}
        try:
            for domain, name in names.items():
                tables[domain] = SpanTable.attach(name, len(layout[domain]), capacity, tracked=tracked)
        except BaseException:
            for table in tables.values():
                table.close()
            raise
        return cls(layout, tables, capacity)

    @property
    def names(self) -> dict[int, str]:
        """The shared segment of each domain this process maps (none: private memory)."""
        return {domain: table.name for domain, table in self._tables.items() if table.name is not None}

    def segments(self) -> dict[str, int]:
        """Each shared segment and its rings (node.json's ``traces``)."""
        return {name: self._tables[domain].rings for domain, name in self.names.items()}

    def writer(self, endpoint: int) -> SpanWriter:
        """The writer of ``endpoint``'s ring (KeyError: a domain this process does not map)."""
        domain, ring = self._place[endpoint]
        return self._tables[domain].writer(ring)

    def reader(self) -> SpanReaders:
        return SpanReaders([table.reader() for table in self._tables.values()])

    def close(self) -> None:
        for table in self._tables.values():
            table.close()
        self._tables.clear()


@contextlib.contextmanager
def open_segments(segments: Mapping[str, int], capacity: int) -> Iterator[SpanReaders]:
    """A reader of another process's node (``spright trace``): ``segments`` (name -> rings),
    each read as ``open_segment`` does."""
    with contextlib.ExitStack() as stack:
        yield SpanReaders([stack.enter_context(open_segment(name, rings, capacity))
                           for name, rings in segments.items()])
