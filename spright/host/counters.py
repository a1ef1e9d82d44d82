"""The counter table: one row of u64 counters per endpoint in shared memory, written in place
by its one writer (a worker, a gateway) and read by anyone (the gateway's ``/metrics``, the
CLI), plus room for the gateways' latency histograms. Its layout only: the Prometheus
exposition is spright.front.metrics, so a worker never imports the Prometheus client.

Why a shared-memory table: ``spright stats`` and the gateway's ``/metrics`` must see every
worker's counters without asking the workers (a question costs a wake-up and a descriptor
on the hot path). So each endpoint owns one row of u64 counters in a segment the supervisor
creates (per-run random name, mode 0600, unlinked on shutdown like the pool) and bumps its
own row in place: one writer per row, no lock, a couple of memoryview ops per descriptor.
One segment per security domain, like the pools: a worker maps its own domain's rows only,
so a function can neither read another domain's traffic pattern nor forge its counters.
Readers in other processes read the segment's bytes from /dev/shm (never through
``SharedMemory``, whose resource tracker would unlink a segment it merely attached to).
"""

from __future__ import annotations

import contextlib
import secrets
import struct
from collections.abc import Mapping, Sequence
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
GATEWAY_DOMAIN = 0  # the gateways' security domain (RouteTable.domains[0])


Layout = Mapping[int, Sequence[int]]  # security domain -> the endpoints whose rows its segment holds, in order


def layout(table: RouteTable) -> dict[int, tuple[int, ...]]:
    """Which rows each security domain's segment holds: domain 0 (the gateway's) every gateway
    process's, each function domain its functions' endpoints (every instance and revision slot)."""
    domains: dict[int, list[int]] = {GATEWAY_DOMAIN: list(table.gateways)}
    for f in table.functions:
        domains.setdefault(f.domain, []).extend(table.instance_endpoints(f.id))
    return {domain: tuple(endpoints) for domain, endpoints in domains.items()}


class CounterTable:
    """Rows of u64 counters, one per endpoint, over one segment per security domain (see
    ``layout``): a worker maps its own domain's only, so it can neither read nor write another
    domain's rows; the gateways map every domain's. Domain 0's segment ends with ``extra``
    words (the gateways' latency histograms, see ``histogram_words``). In shared memory for a
    node, private for tests. ``row(endpoint)`` is a view held once: writing a row costs what it
    did in a single segment."""

    def __init__(self, rows: int | Layout, segments: Mapping[int, SharedMemory | None], owner: bool,
                 extra_words: int = 0) -> None:
        """``segments``: the mapped domains' segments (None: private memory), of ``rows``' layout."""
        places = _layout(rows)
        self.layout = places
        self.rows = sum(len(endpoints) for endpoints in places.values())
        self._segments = dict(segments)
        self._owner = owner
        self._views: list[memoryview] = []
        self._rows: dict[int, memoryview] = {}
        self.extra = memoryview(bytearray()).cast("Q")  # none: a worker, which maps no gateway's segment
        for domain, segment in self._segments.items():
            endpoints = places[domain]
            size = len(endpoints) * ROW_BYTES
            buffer = segment.buf if segment is not None else memoryview(
                bytearray(size + (8 * extra_words if domain == GATEWAY_DOMAIN else 0)))
            assert buffer is not None  # a SharedMemory's buf is None only once closed
            words = buffer[:size].cast("Q")
            self._views.append(words)
            for i, endpoint in enumerate(endpoints):
                self._rows[endpoint] = row = words[i * ROW_WORDS : (i + 1) * ROW_WORDS]
                self._views.append(row)
            if domain == GATEWAY_DOMAIN:
                self.extra = buffer[size:].cast("Q")
        self._views.append(self.extra)

    @classmethod
    def create(cls, rows: int | Layout, *, shared: bool = True, extra_words: int = 0) -> CounterTable:
        """A segment per domain of ``rows`` (a layout, or a number of rows all in domain 0).
        ``shared``: /dev/shm segments (POSIX shm is created with mode 0600), each under a fresh
        random name, for a node; otherwise plain memory, for the in-process TestClient."""
        places = _layout(rows)
        if not shared:
            return cls(places, dict.fromkeys(places), True, extra_words)
        segments: dict[int, SharedMemory | None] = {}
        try:
            for domain, endpoints in places.items():
                extra = 8 * extra_words if domain == GATEWAY_DOMAIN else 0
                segments[domain] = SharedMemory(f"spright-{secrets.token_hex(8)}-metrics", create=True,
                                                size=len(endpoints) * ROW_BYTES + extra)
        except BaseException:
            for segment in segments.values():
                assert segment is not None
                segment.close()
                segment.unlink()
            raise
        return cls(places, segments, True)

    @classmethod
    def attach(cls, rows: int | Layout, names: Mapping[int, str], *, tracked: bool = True) -> CounterTable:
        """Another process's attachment to the segments ``names`` names (domain -> segment: a
        worker is handed its own domain's only); ``tracked``: see ``spright.host.pool.attach_segment``."""
        segments: dict[int, SharedMemory | None] = {}
        for domain, name in names.items():
            segments[domain] = attach_segment(name, tracked)
        return cls(rows, segments, False)

    @property
    def names(self) -> dict[int, str]:
        """The shared segment of each domain this process maps (none: private memory)."""
        return {domain: segment.name for domain, segment in self._segments.items() if segment is not None}

    def segments(self) -> dict[str, list[int]]:
        """Each shared segment, and the endpoints whose rows it holds (node.json's ``metrics``)."""
        return {name: list(self.layout[domain]) for domain, name in self.names.items()}

    def row(self, endpoint: int) -> memoryview:
        """The endpoint's counters, writable in place: ``row[IN] += 1``. KeyError: a row of a
        domain this process does not map."""
        return self._rows[endpoint]

    def in_flight(self, endpoint: int) -> tuple[int, int]:
        """What ``endpoint``'s worker last wrote: descriptors it received so far, and its
        handlers running or waiting."""
        row = self._rows[endpoint]
        return row[IN], row[IN_FLIGHT]

    def read(self) -> list[list[int]]:
        """Every endpoint's row by endpoint id (zeros for a domain this process does not map)."""
        rows = self._rows
        return [rows[e].tolist() if e in rows else [0] * ROW_WORDS for e in range(self.rows)]

    def close(self) -> None:
        """Detach; the creator also unlinks (first, so a view held elsewhere cannot leak it)."""
        for segment in self._segments.values():
            if segment is not None and self._owner:
                with contextlib.suppress(FileNotFoundError):
                    segment.unlink()
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        self._rows.clear()
        for segment in self._segments.values():
            if segment is not None:
                segment.close()
        self._segments.clear()


def _layout(rows: int | Layout) -> dict[int, tuple[int, ...]]:
    if isinstance(rows, int):
        return {GATEWAY_DOMAIN: tuple(range(rows))}
    return {domain: tuple(endpoints) for domain, endpoints in rows.items() if endpoints}


def read_segments(segments: Mapping[str, Sequence[int]], rows: int) -> list[list[int]]:
    """Another process's view (the CLI): a plain read of each segment, no attachment; every
    endpoint's row by endpoint id (zeros for one no segment holds)."""
    found = [[0] * ROW_WORDS for _ in range(rows)]
    for name, endpoints in segments.items():
        data = Path("/dev/shm", name).read_bytes()[: len(endpoints) * ROW_BYTES]
        words = struct.unpack(f"<{len(data) // 8}Q", data)
        for i, endpoint in enumerate(endpoints):
            found[endpoint] = list(words[i * ROW_WORDS : (i + 1) * ROW_WORDS])
    return found


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
