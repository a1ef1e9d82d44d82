"""Assembled traces out to an OpenTelemetry collector.

The spans go out as OpenTelemetry's own SDK spans (``ReadableSpan``) through its OTLP/HTTP
exporter rather than as OTLP written by hand: the exporter encodes, retries and times out as every
other OpenTelemetry exporter does, and honours the standard ``OTEL_*`` environment variables
(headers, compression, resource attributes). The records were written on the data path long
before (spright.data.traces); an assembled tree is replayed with its exact times and ids, so what
the collector shows is what happened, not when it was exported.

``Exporter.export`` is called on the gateway's event loop, so all it does is append the tree to a
bounded queue. The exporter's own thread does the rest: it builds the ``ReadableSpan``s directly,
not through the SDK's Tracer, whose context, sampler, id generator and per-span lock this replay
has no use for (the gateway already chose which traces to keep; the ids are known or random),
and hands them to the OTLP exporter in batches, as the SDK's BatchSpanProcessor would.

This is the only module that imports opentelemetry: workers and data planes never do (an
import-linter contract in pyproject.toml says so).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from random import getrandbits

from opentelemetry import trace as otel
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue

from spright.data.traces import Span, Trace

log = logging.getLogger("spright")

# Span kinds after OpenTelemetry's semantic conventions: the gateway's request is an HTTP server
# span; a ``ctx.call`` is an RPC, whose caller side is CLIENT and whose callee side (the handler's
# run) is SERVER. A chain's hop is INTERNAL: nothing on the other side made a client span for it
# (the gateway or the previous hop hands the descriptor on and does not wait for an answer of its
# own), and the whole chain is one application's work for the one server span above it.
KINDS = {"server": otel.SpanKind.SERVER, "hop": otel.SpanKind.INTERNAL, "call": otel.SpanKind.CLIENT,
         "handler": otel.SpanKind.SERVER}

# What the SDK's Tracer gave every span: exported traces are sampled (the gateway kept them), and
# a span's status is UNSET unless it failed. Immutable, so shared by every span.
SAMPLED = otel.TraceFlags(otel.TraceFlags.SAMPLED)
UNSET = otel.Status(otel.StatusCode.UNSET)

# BatchSpanProcessor's limit per request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE's default), a shorter wait
# than its 5 s default: a trace shows in the collector within a second.
MAX_BATCH = 512
INTERVAL = 1.0
QUEUE = 2048  # traces: at least BatchSpanProcessor's 2,048 spans
SHUTDOWN_TIMEOUT = 30.0  # as BatchSpanProcessor's: a collector that does not answer delays no exit longer


class Exporter:
    """Sends assembled traces to an OTLP/HTTP collector. ``endpoint`` is the full URL of the
    traces endpoint (``http://collector:4318/v1/traces``, as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
    ``service``: the app's name (the resource's ``service.name``); ``attributes``: more resource
    attributes (``spright.dataplane``, ``host.name``, ...).

    ``queue``: how many traces may wait for the export thread; a trace exported when that many
    wait is dropped and counted in ``dropped`` (the gateway never waits for the collector, and
    the memory of a slow one is bounded). The thread takes the waiting traces when ``MAX_BATCH``
    of them wait (so at least a full batch of spans), every ``interval`` seconds, and at
    ``shutdown``."""

    def __init__(self, endpoint: str, *, service: str, attributes: dict[str, str], queue: int = QUEUE,
                 interval: float = INTERVAL) -> None:
        self._resource = _Resource(Resource.create({**attributes, SERVICE_NAME: service}))
        self._scope = InstrumentationScope(__name__)  # what the Tracer of ``get_tracer(__name__)`` had
        self._otlp = OTLPSpanExporter(endpoint=endpoint)
        self._bound, self._interval = queue, interval
        self._queue: deque[tuple[Trace, int | None]] = deque()
        self._ready = threading.Condition(threading.Lock())  # guards the queue, ``dropped``, ``_closed``
        self._closed = False
        self.dropped = 0
        # Records carry CLOCK_MONOTONIC times; OTLP wants the epoch. One offset for the exporter's
        # life keeps every span's order and durations exactly as recorded (a later NTP step of the
        # wall clock shifts nothing relative to what was already exported).
        self.offset_ns = time.time_ns() - time.monotonic_ns()
        # A daemon: a process that exits without ``shutdown`` loses what is queued, not its exit.
        self._thread = threading.Thread(target=self._run, name="spright-otlp-export", daemon=True)
        self._thread.start()

    def export(self, trace: Trace, server_span_id: int | None = None) -> None:
        """Queue one tree for export, or drop it when the queue is full. ``server_span_id``: the
        span id the gateway put in the response's ``traceparent`` (None: a new one)."""
        with self._ready:  # held for an append: the thread holds it only to take the whole queue
            if len(self._queue) >= self._bound or self._closed:
                self.dropped += 1
                return
            self._queue.append((trace, server_span_id))
            if len(self._queue) == MAX_BATCH:
                self._ready.notify()

    def shutdown(self) -> None:
        """Send what is queued, then stop the export thread and the OTLP exporter; once."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            self._ready.notify()
        self._thread.join(SHUTDOWN_TIMEOUT)
        self._otlp.shutdown()

    def _run(self) -> None:
        """The export thread: the queued trees into spans, the spans out in batches of at most
        MAX_BATCH; a part batch waits for more until the next ``interval`` tick (or shutdown)."""
        pending: list[ReadableSpan] = []
        due = time.monotonic() + self._interval
        closed = False
        while not closed:
            with self._ready:
                self._ready.wait_for(lambda: len(self._queue) >= MAX_BATCH or self._closed, due - time.monotonic())
                traces, self._queue = self._queue, deque()
                closed = self._closed
            for trace, server_span_id in traces:
                try:
                    self._spans(trace, server_span_id, pending)
                except Exception:  # a bug, not a reason to stop the thread and drop every later trace
                    log.exception("spright: trace %d could not be exported", trace.request_id)
            timed_out = time.monotonic() >= due
            while len(pending) >= MAX_BATCH or (pending and (timed_out or closed)):
                self._send(pending[:MAX_BATCH])
                del pending[:MAX_BATCH]
            if timed_out:
                due = time.monotonic() + self._interval

    def _send(self, batch: list[ReadableSpan]) -> None:
        try:  # the exporter logs a refused or failed request itself; only a bug here raises
            self._otlp.export(batch)
        except Exception:  # as BatchSpanProcessor: logged, and the thread lives on
            log.exception("spright: exporting %d spans failed", len(batch))

    def _spans(self, trace: Trace, server_span_id: int | None, out: list[ReadableSpan]) -> None:
        """``trace``'s spans onto ``out``, the server span first."""
        parent = None
        if trace.parent_id:  # the caller's span, from the request's traceparent
            parent = otel.SpanContext(trace.trace_id, trace.parent_id, is_remote=True, trace_flags=SAMPLED)
        self._add(trace.root, trace.trace_id, server_span_id or _span_id(), parent,
                  {"http.route": trace.route, "spright.request_id": trace.request_id}, out)

    def _add(self, span: Span, trace_id: int, span_id: int, parent: otel.SpanContext | None,
             extra: dict[str, AttributeValue], out: list[ReadableSpan]) -> None:
        """``span`` under ``parent``, then its children under it (depth first)."""
        attributes: dict[str, AttributeValue] = {"spright.function": span.function, "spright.endpoint": span.endpoint,
                                                 **extra}
        if span.queue_ns is not None:
            attributes["spright.queue_ns"] = span.queue_ns
        if span.transit_ns is not None:
            attributes["spright.transit_ns"] = span.transit_ns
        # HTTP's own attribute on the HTTP span; a hop's or a call's status is the handler's
        attributes["http.response.status_code" if span.kind == "server" else "spright.status"] = span.status
        status = UNSET
        if span.status >= 500:
            attributes["error.type"] = str(span.status)  # what the semantic conventions ask with ERROR
            status = otel.Status(otel.StatusCode.ERROR, f"status {span.status}")
        context = otel.SpanContext(trace_id, span_id, is_remote=False, trace_flags=SAMPLED)
        out.append(ReadableSpan(span.name, context, parent, self._resource, attributes, kind=KINDS[span.kind],
                                status=status, start_time=span.start_ns + self.offset_ns,
                                end_time=span.end_ns + self.offset_ns, instrumentation_scope=self._scope))
        for child in span.children:
            self._add(child, trace_id, _span_id(), context, {}, out)


class _Resource(Resource):
    """A Resource that hashes once. Resource's own hash dumps its attributes to JSON at every
    call, and the OTLP encoder hashes each span's resource (to group the spans by resource): a
    third of the encoder's time per span. A Resource's attributes never change (immutable
    BoundedAttributes), so neither does its hash; equality stays Resource's."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def _span_id() -> int:
    """A random span id, as the SDK's RandomIdGenerator makes them (0 is not a valid id)."""
    while not (span_id := getrandbits(64)):
        pass
    return span_id
