"""The counter table: one row of u64 counters per endpoint in shared memory, written in place
by its one writer (a worker, a gateway) and read by anyone (the gateway's ``/metrics``, the
CLI), plus room for the gateways' latency histograms. Its layout only: the Prometheus
exposition is spright.front.metrics, so a worker never imports the Prometheus client.

Why a shared-memory table: ``spright stats`` and the gateway's ``/metrics`` must see every
worker's counters without asking the workers (a question costs a wake-up and a descriptor
on the hot path). So each endpoint owns one row of u64 counters in a segment the supervisor
creates (per-run random name, mode 0600, unlinked on shutdown like the pool) and bumps its
own row in place: one writer per row, no lock, a couple of memoryview ops per descriptor.
Readers in other processes read the segment's bytes from /dev/shm (never through
``SharedMemory``, whose resource tracker would unlink a segment it merely attached to).
"""

from __future__ import annotations

import contextlib
import secrets
import struct
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

from spright.data.table import RouteTable
from spright.host.pool import attach_segment

# -- counter table layout: one row of ROW_WORDS u64 per endpoint (gateway 0, functions 1..N) --
COLUMNS = (
    "descriptors_in",  # descriptors this endpoint received
    "descriptors_out",  # descriptors it sent (READY announcements excluded)
    "payload_bytes",  # payload bytes referenced by the descriptors it received
    "handler_errors",  # handlers that raised (functions only)
    "calls",  # ctx.call()s made
    "handled",  # handler runs finished (requests and calls), errors included
    "handler_ns",  # their total wall time, awaits (ctx.call) included: mean = handler_ns / handled
    "refused_calls",  # ctx.call()s the data plane refused: the callee is in another security domain
    "dropped_descriptors",  # descriptors no correct peer sends (bad slot, hop, kind...): logged and dropped
    "requests",  # gateway only: HTTP requests sent down a chain or answered at once
    "responses_1xx",  # gateway only: responses by status class
    "responses_2xx",
    "responses_3xx",
    "responses_4xx",
    "responses_5xx",
)
IN, OUT, BYTES, ERRORS, CALLS, HANDLED, HANDLER_NS, REFUSED_CALLS, DROPPED, REQUESTS = range(10)
RESPONSES = REQUESTS  # RESPONSES + status // 100 is the column of that status class
ROW_WORDS = 16  # 128 bytes: two cache lines, so writers of neighbouring rows never share one
IN_FLIGHT = ROW_WORDS - 1  # a gauge, not a counter: handlers running or waiting at the endpoint now
assert len(COLUMNS) <= IN_FLIGHT
ROW_BYTES = ROW_WORDS * 8
FUNCTION_COLUMNS = COLUMNS[:9]

# -- latency histogram: fixed bounds in seconds (le), tuned for sub-millisecond chains ------
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
           0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SLOTS = len(BUCKETS) + 1  # + the implicit +Inf bucket


class CounterTable:
    """Rows of u64 counters, one per endpoint, then ``extra`` words (the gateways' latency
    histograms, see ``histogram_words``); in shared memory for a node, private for tests."""

    def __init__(self, rows: int, segment: SharedMemory | None, owner: bool, extra_words: int = 0) -> None:
        self.rows = rows
        self._segment = segment
        self._owner = owner
        buffer = segment.buf if segment is not None else memoryview(bytearray(rows * ROW_BYTES + 8 * extra_words))
        assert buffer is not None  # a SharedMemory's buf is None only once closed
        self._words = buffer[: rows * ROW_BYTES].cast("Q")
        self._rows = [self._words[i * ROW_WORDS : (i + 1) * ROW_WORDS] for i in range(rows)]
        self.extra = buffer[rows * ROW_BYTES :].cast("Q")

    @classmethod
    def create(cls, rows: int, *, shared: bool = True, extra_words: int = 0) -> CounterTable:
        """``shared``: a /dev/shm segment (POSIX shm is created with mode 0600) under a fresh
        random name, for a node; otherwise plain memory, for the in-process TestClient."""
        if not shared:
            return cls(rows, None, True, extra_words)
        segment = SharedMemory(f"spright-{secrets.token_hex(6)}-metrics", create=True,
                               size=rows * ROW_BYTES + 8 * extra_words)
        return cls(rows, segment, True)

    @classmethod
    def attach(cls, name: str, rows: int, *, tracked: bool = True) -> CounterTable:
        """Another process's attachment (``tracked``: see ``spright.host.pool.attach_segment``)."""
        return cls(rows, attach_segment(name, tracked), False)

    @property
    def name(self) -> str | None:
        return self._segment.name if self._segment is not None else None

    def row(self, endpoint: int) -> memoryview:
        """The endpoint's counters, writable in place: ``row[IN] += 1``."""
        return self._rows[endpoint]

    def in_flight(self, endpoint: int) -> tuple[int, int]:
        """What ``endpoint``'s worker last wrote: descriptors it received so far, and its
        handlers running or waiting."""
        row = self._rows[endpoint]
        return row[IN], row[IN_FLIGHT]

    def read(self) -> list[list[int]]:
        return [row.tolist() for row in self._rows]

    def close(self) -> None:
        """Detach; the creator also unlinks (first, so a view held elsewhere cannot leak it)."""
        if self._segment is not None and self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._segment.unlink()
        for row in self._rows:
            row.release()
        self._rows.clear()
        self._words.release()
        self.extra.release()
        if self._segment is not None:
            self._segment.close()
            self._segment = None


def read_segment(name: str, rows: int) -> list[list[int]]:
    """Another process's view (the CLI): a plain read of the segment, no attachment."""
    data = Path("/dev/shm", name).read_bytes()[: rows * ROW_BYTES]
    words = struct.unpack(f"<{len(data) // 8}Q", data)
    return [list(words[i * ROW_WORDS : (i + 1) * ROW_WORDS]) for i in range(len(words) // ROW_WORDS)]


def by_function(table: RouteTable, rows: list[list[int]]) -> list[list[int]]:
    """Rows per function (the gateways' first): each function's instances, and the gateway
    processes, added up."""
    summed = [[sum(column) for column in zip(*(rows[g] for g in table.gateways), strict=True)],
              *([0] * len(rows[0]) for _ in table.functions)]
    for f in table.functions:
        for endpoint in table.instance_endpoints(f.id):
            summed[f.id] = [a + b for a, b in zip(summed[f.id], rows[endpoint], strict=True)]
    return summed


def row_dict(row: list[int], gateway: bool) -> dict[str, int]:
    return dict(zip(COLUMNS if gateway else FUNCTION_COLUMNS, row, strict=False))


REFUSALS = ("in_flight", "connections")  # why a gateway refused work at once (spright_requests_refused)
REFUSED_IN_FLIGHT, REFUSED_CONNECTION = range(len(REFUSALS))


def histogram_words(table: RouteTable) -> int:
    """Room for every gateway's latency histograms and refusal counts in the counter table
    (``CounterTable.extra``)."""
    return len(table.gateways) * (5 * len(table.routes) * (SLOTS + 1) + len(REFUSALS))
