"""spright.front.tracing: assembled trees out through OpenTelemetry's SDK to a real OTLP/HTTP
receiver (tests/kit/otlp.py), checked as the collector decodes them; and the Server-Timing
header a trace makes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from spright.data.traces import Span, Trace, server_timing
from spright.front.tracing import Exporter
from tests.kit.otlp import Received, Receiver
from tests.kit.traces import PARENT_ID, TRACE_ID, cart_trace

SERVER_SPAN_ID = 0x53995C3F42CD8AD8
WAIT = 30.0  # generous: the export thread shares 2 cores with whatever else runs


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def exporter_for(receiver: Receiver) -> Exporter:
    return Exporter(receiver.endpoint, service="boutique",
                    attributes={"spright.dataplane": "skmsg", "host.name": "node-1"})


def by_name(spans: list[Received]) -> dict[str, OtlpSpan]:
    named = {received.span.name: received.span for received in spans}
    assert len(named) == len(spans), [received.span.name for received in spans]
    return named


def test_a_tree_arrives_with_its_ids_parents_and_exact_times(receiver: Receiver) -> None:
    exporter = exporter_for(receiver)
    trace = cart_trace()
    exporter.export(trace, server_span_id=SERVER_SPAN_ID)
    exporter.shutdown()
    spans = by_name(receiver.wait_for(5, WAIT))
    assert receiver.refused == []

    assert set(spans) == {"GET /cart", "frontend", "call cart", "cart", "checkout"}
    assert {span.trace_id for span in spans.values()} == {TRACE_ID.to_bytes(16, "big")}
    root = spans["GET /cart"]
    assert root.span_id == SERVER_SPAN_ID.to_bytes(8, "big")  # the id the response's traceparent named
    assert root.parent_span_id == PARENT_ID.to_bytes(8, "big")  # the caller's span, from the request
    for child, parent in (("frontend", "GET /cart"), ("checkout", "GET /cart"), ("call cart", "frontend"),
                          ("cart", "call cart")):
        assert spans[child].parent_span_id == spans[parent].span_id, child
    assert len({span.span_id for span in spans.values()}) == 5

    # the recorded monotonic times, moved to the epoch by one offset: order and durations exact
    for span in (trace.root, *trace.root.children, trace.root.children[0].children[0],
                 trace.root.children[0].children[0].children[0]):
        sent = spans[span.name]
        assert (sent.start_time_unix_nano, sent.end_time_unix_nano) == \
            (span.start_ns + exporter.offset_ns, span.end_ns + exporter.offset_ns), span.name
    assert 1.5e18 < root.start_time_unix_nano < 4e18  # an epoch time (2017..2096), not a monotonic one

    kinds = {name: span.kind for name, span in spans.items()}
    assert kinds == {"GET /cart": OtlpSpan.SPAN_KIND_SERVER, "frontend": OtlpSpan.SPAN_KIND_INTERNAL,
                     "checkout": OtlpSpan.SPAN_KIND_INTERNAL, "call cart": OtlpSpan.SPAN_KIND_CLIENT,
                     "cart": OtlpSpan.SPAN_KIND_SERVER}


def test_attributes_resource_and_scope(receiver: Receiver) -> None:
    exporter = exporter_for(receiver)
    exporter.export(cart_trace(), server_span_id=SERVER_SPAN_ID)
    exporter.shutdown()
    spans = receiver.wait_for(5, WAIT)
    named = {received.span.name: received for received in spans}

    resource = spans[0].resource
    assert resource["service.name"] == "boutique"
    assert resource["spright.dataplane"] == "skmsg"
    assert resource["host.name"] == "node-1"
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    assert {received.scope for received in spans} == {"spright.front.tracing"}

    assert named["GET /cart"].attributes == {"spright.function": "gateway", "spright.endpoint": 0,
                                             "http.route": "/cart", "spright.request_id": 77,
                                             "http.response.status_code": 200}
    assert named["frontend"].attributes == {"spright.function": "frontend", "spright.endpoint": 2,
                                            "spright.queue_ns": 5_000, "spright.transit_ns": 2_000,
                                            "spright.status": 200}
    assert named["checkout"].attributes["spright.queue_ns"] == 0  # zero is a value, None is not known
    assert "spright.queue_ns" not in named["call cart"].attributes
    assert named["cart"].attributes["spright.transit_ns"] == 1_500
    assert {received.span.status.code for received in spans} == {Status.STATUS_CODE_UNSET}


def test_5xx_is_an_error_and_4xx_is_not(receiver: Receiver) -> None:
    exporter = exporter_for(receiver)
    exporter.export(cart_trace(hop_status=503))
    exporter.export(cart_trace(hop_status=404, trace_id=TRACE_ID + 1))
    exporter.shutdown()
    spans = receiver.wait_for(10, WAIT)
    failed = {r.span.name: r for r in spans if r.span.trace_id == TRACE_ID.to_bytes(16, "big")}
    refused = {r.span.name: r for r in spans if r.span.trace_id == (TRACE_ID + 1).to_bytes(16, "big")}

    for name in ("GET /cart", "checkout"):
        assert failed[name].span.status.code == Status.STATUS_CODE_ERROR, name
        assert failed[name].attributes["error.type"] == "503"
        assert refused[name].span.status.code == Status.STATUS_CODE_UNSET, name
        assert "error.type" not in refused[name].attributes
    assert failed["GET /cart"].attributes["http.response.status_code"] == 503
    assert failed["frontend"].span.status.code == Status.STATUS_CODE_UNSET  # its own 200 stands


def test_a_root_request_keeps_its_trace_id_and_a_server_span_id_is_used_once(receiver: Receiver) -> None:
    """No traceparent came in: the server span has no parent, yet the trace id is the gateway's;
    a later export without ``server_span_id`` gets a new span id, not the one given before."""
    exporter = exporter_for(receiver)
    exporter.export(cart_trace(parent_id=0), server_span_id=SERVER_SPAN_ID)
    exporter.export(cart_trace(parent_id=0, trace_id=TRACE_ID + 1))
    exporter.shutdown()
    spans = receiver.wait_for(10, WAIT)
    roots = {r.span.trace_id: r.span for r in spans if r.span.name == "GET /cart"}

    first, second = roots[TRACE_ID.to_bytes(16, "big")], roots[(TRACE_ID + 1).to_bytes(16, "big")]
    assert first.parent_span_id == second.parent_span_id == b""
    assert first.span_id == SERVER_SPAN_ID.to_bytes(8, "big")
    assert second.span_id not in (SERVER_SPAN_ID.to_bytes(8, "big"), bytes(8))
    assert len({r.span.span_id for r in spans}) == 10


def test_exports_from_several_threads_keep_each_trees_ids(receiver: Receiver) -> None:
    """``export`` may be called from several threads at once (a gateway's loop, a test's): every
    tree arrives whole, each with its own server span id and its spans under it."""
    exporter = exporter_for(receiver)
    threads, per_thread = 4, 25

    def export_many(first: int) -> None:
        for n in range(first, first + per_thread):
            exporter.export(cart_trace(trace_id=TRACE_ID + n, parent_id=n % 2), server_span_id=SERVER_SPAN_ID + n)

    workers = [threading.Thread(target=export_many, args=(t * per_thread,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    exporter.shutdown()
    spans = receiver.wait_for(5 * threads * per_thread, WAIT)
    assert exporter.dropped == 0
    assert len(spans) == 5 * threads * per_thread

    for root in (r.span for r in spans if r.span.name == "GET /cart"):
        n = int.from_bytes(root.trace_id, "big") - TRACE_ID
        assert root.span_id == (SERVER_SPAN_ID + n).to_bytes(8, "big"), n
    children = [r.span for r in spans if r.span.name == "frontend"]
    parents = {(r.span.trace_id, r.span.span_id) for r in spans if r.span.name == "GET /cart"}
    assert {(span.trace_id, span.parent_span_id) for span in children} == parents


def test_shutdown_sends_what_is_queued_before_it_returns(receiver: Receiver) -> None:
    """The export thread waits up to a second for a fuller batch on its own: shutdown must not;
    and it is done once (a second call, or an export after it, sends nothing)."""
    exporter = exporter_for(receiver)
    exporter.export(cart_trace())
    exporter.shutdown()
    assert [received.span.name for received in receiver.spans] == ["GET /cart", "frontend", "call cart", "cart",
                                                                   "checkout"]
    exporter.shutdown()
    exporter.export(cart_trace())
    assert exporter.dropped == 1
    assert len(receiver.spans) == 5


def test_a_full_queue_drops_and_counts_instead_of_waiting(receiver: Receiver) -> None:
    """With ``queue=3``, the fourth and fifth trees exported are dropped, counted, and the call
    returns at once. No sleep and no hook into the exporter make the export thread leave the
    queue full meanwhile: it takes the queue only when MAX_BATCH (512) traces wait, which a bound
    of 3 never allows, when ``interval`` has passed (an hour here), or at shutdown; so the queue
    holds exactly the first three until ``shutdown``, which sends those three and only them."""
    exporter = Exporter(receiver.endpoint, service="boutique", attributes={}, queue=3, interval=3600)
    for n in range(5):
        exporter.export(cart_trace(trace_id=TRACE_ID + n), server_span_id=SERVER_SPAN_ID + n)
    assert exporter.dropped == 2
    exporter.shutdown()
    spans = receiver.wait_for(15, WAIT)

    assert len(spans) == 15
    roots = {received.span.trace_id: received.span.span_id for received in spans if received.span.name == "GET /cart"}
    assert roots == {(TRACE_ID + n).to_bytes(16, "big"): (SERVER_SPAN_ID + n).to_bytes(8, "big") for n in range(3)}


# Server-Timing


def hop(function: str, start_ns: int, end_ns: int, queue_ns: int | None = None) -> Span:
    return Span(function, "hop", function, 1, start_ns, end_ns, 200, queue_ns=queue_ns)


def timed(*children: Span, start_ns: int = 0, end_ns: int = 2_000_000) -> Trace:
    return Trace(1, 0, True, 1, "/", Span("GET /", "server", "gateway", 0, start_ns, end_ns, 200,
                                          children=list(children)))


def timing(trace: Trace) -> str:
    """The header of a tree: its hop spans in the order they started."""
    hops = sorted((span for span in trace.root.children if span.kind == "hop"), key=lambda span: span.start_ns)
    return server_timing(((span.function, span.duration_ns, span.queue_ns) for span in hops), trace.root.duration_ns)


def test_server_timing_lists_the_hops_in_order_then_the_total() -> None:
    assert timing(cart_trace()) == (
        'frontend;dur=0.350;desc="queue 5.0us", checkout;dur=0.430;desc="queue 0.0us", total;dur=0.900')


def test_server_timing_orders_hops_by_start_and_leaves_out_other_spans() -> None:
    call = Span("call x", "call", "a", 1, 10, 20, 200)
    trace = timed(hop("b", 500_000, 1_000_000), call, hop("a", 100_000, 400_000, queue_ns=1_234))
    assert timing(trace) == 'a;dur=0.300;desc="queue 1.2us", b;dur=0.500, total;dur=2.000'


def test_server_timing_names_are_tokens_and_unique() -> None:
    trace = timed(hop("cart", 0, 1), hop("cart/v2 é", 1, 2), hop("cart", 2, 3), hop("total", 3, 4),
                  hop("cart-2", 4, 5), hop("cart", 5, 6), hop("", 6, 7))
    names = [metric.split(";")[0] for metric in timing(trace).split(", ")]
    assert names == ["cart", "cart_v2__", "cart-2", "total-2", "cart-2-2", "cart-3", "_", "total"]


def test_server_timing_of_a_request_without_hops() -> None:
    assert timing(timed(start_ns=5_000, end_ns=5_000_000)) == "total;dur=4.995"
