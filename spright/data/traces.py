"""What a trace is made of: the fixed-size span record every process writes on the data path,
and the tree of spans the gateway assembles from them (spright.host.spans keeps the records,
spright.front.tracing exports the trees, ``spright trace`` draws them).

A process writes one record per piece of work it did for a traced request (the descriptor's
TRACED flag says which): no ids are made and nothing is sent on the hot path. Records are
joined afterwards by ``request_id`` (one gateway's request, see descriptor.GATEWAY_SHIFT), and
a call's two sides by (the caller's endpoint, its call id). Times are CLOCK_MONOTONIC
nanoseconds (``time.monotonic_ns()``), comparable across the processes of one host.

Per kind, what the four times mean (0: not known):

- SERVER, written by the gateway once the answer is out: t0 the request's head parsed,
  t1 its first descriptor sent, t2 the answer's descriptor received, t3 the response written.
  ``peer`` is the route's index (RouteTable.routes), ``trace_id``/``parent_id``/``sampled``
  the W3C trace context (the incoming one, or one the gateway started).
- HOP (a chain's hop) and CALLED (a ``ctx.call`` served), written by the worker when its
  handler ends: t0 the descriptor received, t1 the handler started (t1 - t0: the queue wait
  for a place), t2 the handler ended and its answer was sent. ``peer``: the sender's endpoint.
- CALL, written by the caller when the reply settles the call: t0 sent, t1 reply received.
  ``peer``: the callee's function id.

``status``: the HTTP status (SERVER), the status the handler answered (HOP, CALLED: 200 unless
it set one or failed), the call's outcome (CALL: 200, or the CallError's status).
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from spright.data.table import RouteTable

SERVER, HOP, CALL, CALLED = 1, 2, 3, 4
SAMPLED, KEPT = 0x1, 0x2  # a SERVER record's ``sampled`` byte: W3C's sampled flag; the trace was kept
KINDS = {SERVER: "server", HOP: "hop", CALL: "call", CALLED: "called"}

RECORD_FIELDS = (
    ("kind", "B"),
    ("sampled", "B"),  # SERVER: SAMPLED (the W3C flag this request carries on) | KEPT (exported)
    ("endpoint", "H"),  # who wrote the record
    ("peer", "H"),  # see the module's docstring, per kind
    ("hop", "B"),  # the chain position (HOP), the call's depth (CALL, CALLED)
    ("_pad", "x"),
    ("chain", "H"),
    ("status", "H"),
    ("request_id", "I"),
    ("call_id", "I"),
    ("t0", "Q"),
    ("t1", "Q"),
    ("t2", "Q"),
    ("t3", "Q"),
    ("trace_hi", "Q"),  # SERVER: the 128-bit trace id, high and low halves
    ("trace_lo", "Q"),
    ("parent_id", "Q"),  # SERVER: the caller's span id from traceparent (0: this request is a root)
)
RECORD = struct.Struct("<" + "".join(code for _, code in RECORD_FIELDS))
RECORD_SIZE = RECORD.size  # 76 bytes
FIELD_NAMES = tuple(name for name, code in RECORD_FIELDS if code != "x")


class Record(NamedTuple):
    """One record as read back (``records(data)``): a tuple, as a batch of them is made in one
    C loop (a frozen dataclass cost a microsecond a record, on the gateway's loop)."""

    kind: int
    sampled: int
    endpoint: int
    peer: int
    hop: int
    chain: int
    status: int
    request_id: int
    call_id: int
    t0: int
    t1: int
    t2: int
    t3: int
    trace_hi: int
    trace_lo: int
    parent_id: int

    @property
    def trace_id(self) -> int:
        return self.trace_hi << 64 | self.trace_lo


assert Record._fields == FIELD_NAMES
_from_fields = functools.partial(tuple.__new__, Record)


def records(data: bytes) -> list[Record]:
    """Whole records packed back to back (a multiple of RECORD_SIZE bytes), in order."""
    return list(map(_from_fields, RECORD.iter_unpack(data)))


@dataclass(slots=True)
class Span:
    """One span of an assembled trace. ``kind``: "server" (the request at the gateway), "hop"
    (a chain's hop), "call" (a ``ctx.call``, the caller's side), "handler" (the callee's run of
    a call). ``queue_ns``: waited for a place before the handler started; ``transit_ns``: the
    data plane's part, from the sender's send to this receiver's receive (None: not known)."""

    name: str
    kind: str
    function: str
    endpoint: int
    start_ns: int
    end_ns: int
    status: int
    queue_ns: int | None = None
    transit_ns: int | None = None
    children: list[Span] = field(default_factory=list)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(slots=True)
class Trace:
    """One request's spans: ``root`` is its server span. ``complete``: every record the tree
    needs was found (a ring overwritten before it was read leaves holes)."""

    trace_id: int
    parent_id: int
    sampled: bool
    request_id: int
    route: str
    root: Span
    complete: bool = True


@dataclass(frozen=True)
class TraceNames:
    """What a trace's spans are called: routes by index, functions by id (from 1), endpoints
    by id (an instance's named after its function; the gateways' are "gateway"). Made from the
    compiled table, and kept in node.json for readers in other processes (``spright trace``)."""

    routes: tuple[str, ...]
    functions: tuple[str, ...]
    endpoints: dict[int, str]

    @classmethod
    def of(cls, table: RouteTable) -> TraceNames:
        return cls(tuple(f"{route.method} {route.path}" for route in table.routes),
                   tuple(f.name for f in table.functions),
                   {e: f.name for f in table.functions for e in table.instance_endpoints(f.id)})

    def to_json(self) -> dict[str, Any]:
        return {"routes": list(self.routes), "functions": list(self.functions),
                "endpoints": {str(e): name for e, name in self.endpoints.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TraceNames:
        return cls(tuple(data["routes"]), tuple(data["functions"]),
                   {int(e): name for e, name in data["endpoints"].items()})

    def endpoint(self, endpoint: int) -> str:
        return self.endpoints.get(endpoint, "gateway")

    def function(self, function_id: int) -> str:
        return self.functions[function_id - 1] if 0 < function_id <= len(self.functions) else f"#{function_id}"

    def route(self, index: int) -> str:
        return self.routes[index] if 0 <= index < len(self.routes) else f"route #{index}"


def assemble(server: Record, records: Iterable[Record], names: TraceNames) -> Trace:
    """The span tree of the request ``server`` (its SERVER record) from the other records
    with its request id: the hops under the root in chain order, each call under the handler
    run that made it, each call's handler run under the call.

    Nothing in a record names its parent, so parents are found: a hop's is the root; a
    call's, the handler run at its endpoint (a HOP or CALLED) that was running when the call
    was sent, the innermost if several were (a handler serving a call its own function made
    runs inside its caller); a served call's, the CALL with its caller's endpoint and call id.
    A record whose parent is missing (its ring was overwritten before it was read) hangs
    from the root, and the trace says it is not ``complete``. A parent must have started
    before its child, so even records that contradict each other cannot make a cycle.
    """
    name = names.route(server.peer)
    root = Span(name, "server", "gateway", server.endpoint, server.t0, server.t3, server.status)
    trace = Trace(server.trace_id, server.parent_id, bool(server.sampled & SAMPLED), server.request_id, name, root)
    hops: dict[int, Record] = {}  # by chain position (the descriptor's hop: 0 for the first function)
    calls: dict[tuple[int, int], tuple[Record, Span]] = {}  # by (caller's endpoint, call id)
    runs: dict[int, list[tuple[Record, Span]]] = {}  # handler runs (HOP, CALLED) by endpoint
    spans: list[tuple[Record, Span]] = []
    for record in records:
        # (SERVER: the request's own.) Request ids wrap round: a record older than the request
        # belongs to an earlier one.
        if record.kind not in (HOP, CALL, CALLED) or record.t0 < server.t0:
            continue
        function = names.endpoint(record.endpoint)
        if record.kind == HOP:
            span = Span(function, "hop", function, record.endpoint, record.t0, record.t2, record.status,
                        queue_ns=record.t1 - record.t0)
            hops[record.hop] = record
            runs.setdefault(record.endpoint, []).append((record, span))
        elif record.kind == CALLED:
            span = Span(function, "handler", function, record.endpoint, record.t0, record.t2, record.status,
                        queue_ns=record.t1 - record.t0)
            runs.setdefault(record.endpoint, []).append((record, span))
        else:
            callee = names.function(record.peer)
            span = Span(f"{function}.call({callee})", "call", function, record.endpoint, record.t0, record.t1,
                        record.status)
            calls[record.endpoint, record.call_id] = record, span
        spans.append((record, span))

    for record, span in spans:
        parent: Span | None = None
        if record.kind == HOP:
            parent = root
            previous = hops.get(record.hop - 1)  # whose send is this hop's transit's start
            if record.hop == 0:
                span.transit_ns = record.t0 - server.t1
            elif previous is not None:
                span.transit_ns = record.t0 - previous.t2
            else:
                trace.complete = False
        elif record.kind == CALLED:
            call = calls.get((record.peer, record.call_id))
            if call is not None and call[0].t0 <= record.t0:
                parent = call[1]
                span.transit_ns = record.t0 - call[0].t0
        else:
            parent = _caller(record, runs.get(record.endpoint, ()))
        if parent is None:
            parent = root
            trace.complete = False
        parent.children.append(span)
    for _, span in spans:
        span.children.sort(key=_start)
    root.children.sort(key=_start)
    return trace


def _caller(call: Record, runs: Iterable[tuple[Record, Span]]) -> Span | None:
    """The handler run that sent ``call``: running then (between its start and its end), and
    received strictly before (which its own served call never was); the innermost one."""
    found: tuple[Record, Span] | None = None
    for run in runs:
        record = run[0]
        if record.t0 < call.t0 and record.t1 <= call.t0 <= record.t2 and (found is None or record.t1 > found[0].t1):
            found = run
    return found[1] if found is not None else None


def _start(span: Span) -> int:
    return span.start_ns


_NOT_TOKEN = re.compile(r"[^!#$%&'*+.^_`|~0-9A-Za-z-]")  # RFC 9110 tchar


def hop_timings(records: Iterable[Record], names: TraceNames) -> list[tuple[str, int, int]]:
    """(function, duration, queue wait) of each HOP record, in chain order: what
    ``server_timing`` lists, read off the records without assembling the tree."""
    hops = sorted((record for record in records if record.kind == HOP), key=lambda record: record.hop)
    return [(names.endpoint(record.endpoint), record.t2 - record.t0, record.t1 - record.t0) for record in hops]


def server_timing(hops: Iterable[tuple[str, int, int | None]], total_ns: int) -> str:
    """A ``Server-Timing`` value (https://w3c.github.io/server-timing/): ``hops`` (function,
    duration ns, queue wait ns or None) in order, each ``<function>;dur=<ms>;desc="queue
    <µs>us"`` (ASCII, as header bytes must be), then ``total``. A metric name is a token, so
    other characters become ``_``; a function met again gets ``-2``, ``-3``, ... (browsers
    keep only one entry per name), and ``total`` is never a function's."""
    taken = {"total"}
    metrics = []
    for function, duration_ns, queue_ns in hops:
        base = _NOT_TOKEN.sub("_", function) or "_"
        name, count = base, 1
        while name in taken:
            count += 1
            name = f"{base}-{count}"
        taken.add(name)
        metric = f"{name};dur={duration_ns / 1e6:.3f}"
        if queue_ns is not None:
            metric += f';desc="queue {queue_ns / 1e3:.1f}us"'
        metrics.append(metric)
    metrics.append(f"total;dur={total_ns / 1e6:.3f}")
    return ", ".join(metrics)
