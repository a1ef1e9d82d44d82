"""Assembled traces out to an OpenTelemetry collector, and a trace's ``Server-Timing`` header.

The spans are built with OpenTelemetry's own SDK rather than by writing OTLP by hand: the SDK
batches them on its background thread (the event loop only builds span objects), retries and
times out as every other OpenTelemetry exporter does, and honours the standard ``OTEL_*``
environment variables (headers, compression, resource attributes). The records were written on
the data path long before (spright.data.traces); ``export`` replays an assembled tree with its
exact times and ids, so what the collector shows is what happened, not when it was exported.

This is the only module that imports opentelemetry: workers and data planes never do (an
import-linter contract in pyproject.toml says so).
"""

from __future__ import annotations

import threading
import time

from opentelemetry import trace as otel
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.util.types import AttributeValue

from spright.data.traces import Span, Trace

# Span kinds after OpenTelemetry's semantic conventions: the gateway's request is an HTTP server
# span; a ``ctx.call`` is an RPC, whose caller side is CLIENT and whose callee side (the handler's
# run) is SERVER. A chain's hop is INTERNAL: nothing on the other side made a client span for it
# (the gateway or the previous hop hands the descriptor on and does not wait for an answer of its
# own), and the whole chain is one application's work for the one server span above it.
KINDS = {"server": otel.SpanKind.SERVER, "hop": otel.SpanKind.INTERNAL, "call": otel.SpanKind.CLIENT,
         "handler": otel.SpanKind.SERVER}


class _TreeIds(IdGenerator):
    """Ids for the spans ``export`` starts. The SDK's Tracer takes no ids from its caller: its
    IdGenerator (``TracerProvider(id_generator=...)``) is the one place the SDK allows them to
    come from. A root trace's server span would otherwise get a new trace id, and the server span
    a span id other than the one the gateway already sent in ``traceparent``; so ``export`` sets
    both before it starts the server span, and every other span id is random.

    The preset is consumed by the next span started: the caller holds ``Exporter._lock`` from
    ``preset`` to that span's start, so another thread's span cannot take it."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._trace_id = 0
        self._span_id = 0

    def preset(self, trace_id: int, span_id: int) -> None:
        """The next span's trace id (used only if it has no parent) and span id (0: random)."""
        self._trace_id, self._span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        trace_id, self._trace_id = self._trace_id, 0
        return trace_id or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        span_id, self._span_id = self._span_id, 0
        return span_id or self._random.generate_span_id()


class Exporter:
    """Sends assembled traces to an OTLP/HTTP collector. ``endpoint`` is the full URL of the
    traces endpoint (``http://collector:4318/v1/traces``, as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
    ``service``: the app's name (the resource's ``service.name``); ``attributes``: more resource
    attributes (``spright.dataplane``, ``host.name``, ...)."""

    def __init__(self, endpoint: str, *, service: str, attributes: dict[str, str]) -> None:
        self._ids = _TreeIds()
        # The gateway decided which requests to trace before their records were written: a
        # sampler here (OTEL_TRACES_SAMPLER would pick one) could only drop half-kept trees.
        self._provider = TracerProvider(sampler=ALWAYS_ON, id_generator=self._ids,
                                        resource=Resource.create({**attributes, SERVICE_NAME: service}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self._provider.get_tracer(__name__)
        self._lock = threading.Lock()
        # Records carry CLOCK_MONOTONIC times; OTLP wants the epoch. One offset for the exporter's
        # life keeps every span's order and durations exactly as recorded (a later NTP step of the
        # wall clock shifts nothing relative to what was already exported).
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def export(self, trace: Trace, server_span_id: int | None = None) -> None:
        """Queue one tree's spans for export. ``server_span_id``: the span id the gateway put in
        the response's ``traceparent`` (None: a new one)."""
        context: Context | None = None
        if trace.parent_id:  # the caller's span, from the request's traceparent
            remote = otel.SpanContext(trace.trace_id, trace.parent_id, is_remote=True,
                                      trace_flags=otel.TraceFlags(otel.TraceFlags.SAMPLED))
            context = otel.set_span_in_context(otel.NonRecordingSpan(remote))
        with self._lock:  # a parent gives its trace id: the preset one would stay unused
            self._ids.preset(0 if context else trace.trace_id, server_span_id or 0)
            self._start(trace.root, context, {"http.route": trace.route, "spright.request_id": trace.request_id})

    def _start(self, span: Span, context: Context | None, extra: dict[str, AttributeValue]) -> None:
        """Start and end ``span`` under ``context``, then its children under it (depth first)."""
        attributes: dict[str, AttributeValue] = {"spright.function": span.function, "spright.endpoint": span.endpoint,
                                                 **extra}
        if span.queue_ns is not None:
            attributes["spright.queue_ns"] = span.queue_ns
        if span.transit_ns is not None:
            attributes["spright.transit_ns"] = span.transit_ns
        # HTTP's own attribute on the HTTP span; a hop's or a call's status is the handler's
        attributes["http.response.status_code" if span.kind == "server" else "spright.status"] = span.status
        if span.status >= 500:
            attributes["error.type"] = str(span.status)  # what the semantic conventions ask with ERROR
        sdk_span = self._tracer.start_span(span.name, context, KINDS[span.kind], attributes,
                                           start_time=span.start_ns + self.offset_ns)
        if span.status >= 500:
            sdk_span.set_status(otel.Status(otel.StatusCode.ERROR, f"status {span.status}"))
        sdk_span.end(end_time=span.end_ns + self.offset_ns)
        inner = otel.set_span_in_context(sdk_span)
        for child in span.children:
            self._start(child, inner, {})

    def shutdown(self) -> None:
        """Send what is queued, then stop the export thread."""
        self._provider.shutdown()
