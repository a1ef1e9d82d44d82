"""Assembled traces (spright.data.traces) with known shapes and times, for the consumers of
``Trace``: the exporter and the waterfall are tested on the same tree."""

from __future__ import annotations

from spright.data.traces import Span, Trace

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


def cart_trace(*, parent_id: int = PARENT_ID, trace_id: int = TRACE_ID, hop_status: int = 200) -> Trace:
    """GET /cart (request 77), 1.0..1.9 ms, through two hops: ``frontend`` (50..400 µs into the
    request, queued 5 µs) calls ``cart`` (a call span, the callee's handler inside it), then
    ``checkout`` (420..850 µs) answers ``hop_status``, which the server span answers too."""
    handler = Span("cart", "handler", "cart", 3, 1_150_000, 1_280_000, 200, queue_ns=3_000, transit_ns=1_500)
    call = Span("call cart", "call", "frontend", 2, 1_100_000, 1_300_000, 200, children=[handler])
    frontend = Span("frontend", "hop", "frontend", 2, 1_050_000, 1_400_000, 200, queue_ns=5_000, transit_ns=2_000,
                    children=[call])
    checkout = Span("checkout", "hop", "checkout", 4, 1_420_000, 1_850_000, hop_status, queue_ns=0, transit_ns=900)
    root = Span("GET /cart", "server", "gateway", 0, 1_000_000, 1_900_000, hop_status, children=[frontend, checkout])
    return Trace(trace_id, parent_id, True, 77, "/cart", root)
