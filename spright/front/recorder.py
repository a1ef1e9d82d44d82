"""The gateway's side of tracing: which requests are traced, their server span, and the trace
put together once the answer is in.

A request is traced when its ``traceparent`` says sampled or the head rate picks it, or for
every request while a tail rule is on (``Config.trace_slower_than``, ``trace_errors``): the
tail decision needs the whole request. The gateway marks its descriptor TRACED and puts its
own server span's ``traceparent`` into the request's headers, so every hop (``ctx.headers``)
and every remote hop carries the context on. Workers write their span records into their
rings before they send their answer on (spright.worker.tracing), so when the chain's answer
reaches the gateway, every record of the request is already there: the gateway reads the rings
(only what is new), adds ``traceparent`` and ``Server-Timing`` (straight from the hop records)
to the response and writes its SERVER record (``spright trace`` reads it); only when the sampler
keeps the trace does it assemble the tree (spright.data.traces.assemble) and hand it to the
exporter (spright.front.tracing), which sends it off the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter_ns
from typing import Protocol

from spright.data.config import Config
from spright.data.descriptor import GATEWAY_SHIFT, TRACED
from spright.data.response import Response
from spright.data.table import RouteEntry, RouteTable
from spright.data.tracecontext import Sampler, format_traceparent, new_span_id, new_trace_id, parse
from spright.data.traces import KEPT, SERVER, Record, Trace, TraceNames, assemble, hop_timings, server_timing
from spright.host.spans import NodeSpans


class Export(Protocol):
    """Where kept traces go (spright.front.tracing.Exporter)."""

    dropped: int  # kept traces it could not take (its queue was full)

    def export(self, trace: Trace, server_span_id: int) -> None: ...

    def shutdown(self) -> None: ...


@dataclass(slots=True)
class _Open:
    """A traced request between its submission and its answer."""

    trace_id: int
    parent_id: int
    span_id: int  # the server span's, in the traceparent handed to the hops and the client
    traceparent: bytes
    sampled: bool  # head decision (W3C sampled flag)
    route: int
    chain: int
    received: int
    sent: int


class Recorder:
    def __init__(self, table: RouteTable, config: Config, spans: NodeSpans, endpoint: int, index: int,
                 exporter: Export | None) -> None:
        """``spans``: the node's rings (this gateway writes its own, ``endpoint``'s, and reads
        them all); ``index``: this gateway process's, whose request ids it owns."""
        self.names = TraceNames.of(table)
        self.sampler = Sampler(config.trace_sample, config.trace_slower_than, config.trace_errors)
        self._records_all = self.sampler.records_all
        self._writer = spans.writer(endpoint)
        self._reader = spans.reader()
        self._endpoint = endpoint
        self._owner = index
        self._exporter = exporter
        self._open: dict[int, _Open] = {}
        self._records: dict[int, list[Record]] = {}  # request id -> its records read so far
        self.lost = 0  # records overwritten in a ring before this gateway read them

    def begin(self, request_id: int, route: RouteEntry, headers: dict[str, str]) -> int:
        """A request goes down ``route``'s chain: TRACED when it is traced (its ``headers``
        then carry the gateway's traceparent on), else 0."""
        traceparent = headers.get("traceparent")  # most requests carry none: no parse, no tracestate
        parent = parse(traceparent, headers.get("tracestate")) if traceparent is not None else None
        sampled = self.sampler.head(parent)
        if not sampled and not self._records_all:
            return 0
        trace_id, parent_id = (parent.trace_id, parent.parent_id) if parent else (new_trace_id(), 0)
        span_id = new_span_id()
        traceparent = format_traceparent(trace_id, span_id, sampled)
        headers["traceparent"] = traceparent
        now = perf_counter_ns()
        self._open[request_id] = _Open(trace_id, parent_id, span_id, traceparent.encode(), sampled, route.index,
                                       route.chain, now, now)
        return TRACED

    def end(self, request_id: int, response: Response) -> list[Record] | None:
        """The request is answered with ``response`` (about to be written): its trace's
        headers, and its export when kept. Returns its records (None: not traced)."""
        if request_id not in self._open:
            return None
        self._read()
        state = self._open.pop(request_id)
        records = self._records.pop(request_id, [])
        now = perf_counter_ns()
        kept = self.sampler.keep(state.sampled, response.status, now - state.received)
        trace_hi, trace_lo = state.trace_id >> 64, state.trace_id & 0xFFFF_FFFF_FFFF_FFFF
        sampled = int(state.sampled) | (KEPT if kept else 0)
        server = Record(SERVER, sampled, self._endpoint, state.route, 0, state.chain, response.status, request_id, 0,
                        state.received, state.sent, now, now, trace_hi, trace_lo, state.parent_id)
        self._writer.write(*server)
        response.raw_headers.append((b"traceparent", state.traceparent))
        timing = server_timing(hop_timings(records, self.names), now - state.received)
        response.raw_headers.append((b"server-timing", timing.encode()))
        if kept and self._exporter is not None:  # the tree only for what is exported: most of a tail rule's is not
            self._exporter.export(assemble(server, records, self.names), state.span_id)
        return records

    def totals(self) -> dict[str, tuple[str, float]]:
        """What tracing lost, for ``/metrics``."""
        return {
            "trace_records_lost": ("Span records overwritten in a ring before the gateway read them.", self.lost),
            "traces_dropped": ("Kept traces the exporter could not take (its queue was full).",
                               self._exporter.dropped if self._exporter is not None else 0),
        }

    def close(self) -> None:
        """Send what the exporter still holds, and stop it."""
        if self._exporter is not None:
            self._exporter.shutdown()

    def discard(self, request_id: int) -> None:
        """``begin`` was for nothing: the request never went down its chain."""
        self._open.pop(request_id, None)

    def _read(self) -> None:
        """Every record new in the rings, kept under its request when that request is one of
        this gateway's open traced ones (another gateway's, or a late hop's, are not)."""
        records, lost = self._reader.read_new()
        self.lost += lost
        open_ = self._open
        for record in records:
            if record.request_id >> GATEWAY_SHIFT == self._owner and record.request_id in open_:
                self._records.setdefault(record.request_id, []).append(record)
