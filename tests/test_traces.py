"""Span trees assembled from hand-made records against a real compiled route table: a chain,
calls made concurrently and from a callee, a handler calling its own function, and records
lost to an overwritten ring."""

import random

import pytest

from spright import App
from spright.data.table import RouteTable
from spright.data.traces import CALL, CALLED, HOP, RECORD, SERVER, Record, Span, Trace, TraceNames, assemble

REQUEST_ID = 0x0000_0042
TRACE_HI, TRACE_LO = 0x0AF7651916CD43DD, 0x8448EB211C80319C


@pytest.fixture(scope="module")
def table() -> RouteTable:
    app = App("shop")
    for name in ("front", "cart", "price", "tax"):  # function ids 1..4
        app.add_function(lambda ctx: None, name=name, instances=2 if name == "price" else 1)
    app.route("/checkout", ["front", "cart", "price"])
    app.route("/quote", "front", methods=("POST",))
    table = app.compile()
    assert table.slot_endpoints(3, 0) == (3, 7)  # price's second instance
    return table


def route(table: RouteTable, path: str) -> int:
    return next(r.index for r in table.routes if r.path == path)


def server(table: RouteTable, path: str, t0: int = 1000, t1: int = 1100, t2: int = 1900, t3: int = 2000,
           status: int = 200) -> Record:
    return Record(SERVER, 1, 0, route(table, path), 0, 0, status, REQUEST_ID, 0, t0, t1, t2, t3, TRACE_HI,
                  TRACE_LO, 0xB7AD6B7169203331)


def hop(endpoint: int, position: int, t0: int, t1: int, t2: int, status: int = 200) -> Record:
    return Record(HOP, 0, endpoint, 0, position, 0, status, REQUEST_ID, 0, t0, t1, t2, 0, 0, 0, 0)


def call(endpoint: int, callee: int, call_id: int, t0: int, t1: int, status: int = 200) -> Record:
    return Record(CALL, 0, endpoint, callee, 0, 0, status, REQUEST_ID, call_id, t0, t1, 0, 0, 0, 0, 0)


def called(endpoint: int, caller: int, call_id: int, t0: int, t1: int, t2: int, status: int = 200) -> Record:
    return Record(CALLED, 0, endpoint, caller, 0, 0, status, REQUEST_ID, call_id, t0, t1, t2, 0, 0, 0, 0)


def shuffled(*records: Record) -> list[Record]:
    """In no particular order (the rings are read one after another), through the wire format."""
    mixed = [Record(*RECORD.unpack(RECORD.pack(*(getattr(r, f) for f in Record._fields))))
             for r in records]
    random.Random(25).shuffle(mixed)
    return mixed


def spans(span: Span) -> list[Span]:
    return [span, *(s for child in span.children for s in spans(child))]


def test_a_three_hop_chain(table: RouteTable) -> None:
    head = server(table, "/checkout")
    records = shuffled(
        head,  # the caller's filter may leave the SERVER record in
        hop(1, 0, 1150, 1160, 1300),
        hop(2, 1, 1350, 1355, 1500),
        hop(7, 2, 1550, 1600, 1800, status=201),  # on price's second instance
    )
    assert assemble(head, records, TraceNames.of(table)) == Trace(
        trace_id=TRACE_HI << 64 | TRACE_LO, parent_id=0xB7AD6B7169203331, sampled=True, request_id=REQUEST_ID,
        route="GET /checkout",
        root=Span("GET /checkout", "server", "gateway", 0, 1000, 2000, 200, children=[
            Span("front", "hop", "front", 1, 1150, 1300, 200, queue_ns=10, transit_ns=50),  # from the gateway's t1
            Span("cart", "hop", "cart", 2, 1350, 1500, 200, queue_ns=5, transit_ns=50),
            Span("price", "hop", "price", 7, 1550, 1800, 201, queue_ns=50, transit_ns=50),
        ]),
        complete=True,
    )


def test_concurrent_calls_and_a_callee_that_calls(table: RouteTable) -> None:
    """front calls cart and price at once; price (its second instance) calls tax, with the
    same call id as front's call of cart: a call is known by its caller's endpoint too."""
    head = server(table, "/quote")
    records = shuffled(
        hop(1, 0, 1100, 1110, 1900),
        call(1, 2, 1, 1200, 1600),
        call(1, 3, 2, 1210, 1700),
        called(2, 1, 1, 1250, 1260, 1590),
        called(7, 1, 2, 1230, 1240, 1690),
        call(7, 4, 1, 1300, 1500, status=500),
        called(4, 7, 1, 1320, 1330, 1490, status=500),
    )
    trace = assemble(head, records, TraceNames.of(table))
    assert trace.route == "POST /quote" and trace.complete
    tax = Span("tax", "handler", "tax", 4, 1320, 1490, 500, queue_ns=10, transit_ns=20)
    price = Span("price", "handler", "price", 7, 1230, 1690, 200, queue_ns=10, transit_ns=20, children=[
        Span("price.call(tax)", "call", "price", 7, 1300, 1500, 500, children=[tax])])
    cart = Span("cart", "handler", "cart", 2, 1250, 1590, 200, queue_ns=10, transit_ns=50)
    assert trace.root.children == [
        Span("front", "hop", "front", 1, 1100, 1900, 200, queue_ns=10, transit_ns=0, children=[
            Span("front.call(cart)", "call", "front", 1, 1200, 1600, 200, children=[cart]),
            Span("front.call(price)", "call", "front", 1, 1210, 1700, 200, children=[price]),
        ]),
    ]


def test_a_call_belongs_to_the_innermost_running_handler(table: RouteTable) -> None:
    """front calls front (one instance: it runs at the same endpoint, inside its caller);
    the inner run's call of tax is the inner run's, though the outer one was running too."""
    head = server(table, "/quote")
    records = shuffled(
        hop(1, 0, 1100, 1110, 1900),
        call(1, 1, 7, 1400, 1500),
        called(1, 1, 7, 1410, 1420, 1490),
        call(1, 4, 8, 1450, 1480),
        called(4, 1, 8, 1455, 1460, 1475),
    )
    trace = assemble(head, records, TraceNames.of(table))
    [outer] = trace.root.children
    [self_call] = outer.children
    [inner] = self_call.children
    assert (self_call.name, inner.name, inner.kind) == ("front.call(front)", "front", "handler")
    [tax_call] = inner.children
    assert tax_call.name == "front.call(tax)" and [s.name for s in tax_call.children] == ["tax"]
    assert trace.complete


def test_records_whose_parent_is_missing_hang_from_the_root(table: RouteTable) -> None:
    head = server(table, "/quote")
    present = [hop(1, 0, 1100, 1110, 1900), call(1, 2, 1, 1200, 1600), called(2, 1, 1, 1250, 1260, 1590)]
    assert assemble(head, present, TraceNames.of(table)).complete

    without_call = assemble(head, [present[0], present[2]], TraceNames.of(table))  # front's CALL was overwritten
    assert not without_call.complete
    assert [(s.name, s.transit_ns) for s in without_call.root.children] == [("front", 0), ("cart", None)]

    without_hop = assemble(head, present[1:], TraceNames.of(table))  # front's HOP was
    assert not without_hop.complete
    [orphan] = without_hop.root.children
    assert orphan.name == "front.call(cart)" and [s.name for s in orphan.children] == ["cart"]


def test_a_missing_hop_leaves_the_next_ones_transit_unknown(table: RouteTable) -> None:
    head = server(table, "/checkout")
    trace = assemble(head, [hop(1, 0, 1150, 1160, 1300), hop(7, 2, 1550, 1600, 1800)], TraceNames.of(table))
    assert not trace.complete
    assert [(s.name, s.transit_ns) for s in trace.root.children] == [("front", 50), ("price", None)]


def test_records_of_an_earlier_request_with_the_same_id_are_ignored(table: RouteTable) -> None:
    """Request ids wrap round: a quiet function's ring may still hold a record of the last
    request that had this id."""
    head = server(table, "/checkout")
    trace = assemble(head, [hop(1, 0, 1150, 1160, 1300), hop(2, 1, 10, 20, 30)], TraceNames.of(table))
    assert [s.name for s in trace.root.children] == ["front"]


def test_contradictory_records_cannot_make_a_cycle(table: RouteTable) -> None:
    """A served call that claims to have started when its call was sent would, by the time
    rule alone, be its own call's caller: each record still lands in the tree exactly once."""
    head = server(table, "/quote")
    records = [hop(1, 0, 1100, 1110, 1900), call(1, 1, 1, 1200, 1300), called(1, 1, 1, 1200, 1200, 1290)]
    trace = assemble(head, records, TraceNames.of(table))
    assert [s.kind for s in spans(trace.root)] == ["server", "hop", "call", "handler"]
    assert trace.complete


def test_a_page_the_gateway_serves_itself(table: RouteTable) -> None:
    head = server(table, "/metrics", status=200)
    trace = assemble(head, [head], TraceNames.of(table))
    assert trace.route == "GET /metrics" and trace.root.children == [] and trace.complete
    assert trace.root.duration_ns == 1000
