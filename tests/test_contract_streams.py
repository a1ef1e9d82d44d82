"""The data-plane contract for streams (spright.worker.streams, spright.front.streams), on every
transport at the Transport/Endpoint interface (see tests/test_contract.py for the suite's rules).

A streamed answer's PART and END go to the gateway process that owns the request (the top bits of
its request id), as RESPONSE and ERROR do: the data plane picks it, userspace or in the kernel.
CREDIT and CANCEL name an exact endpoint (the producing instance) and arrive there as sent.

Catches: a data plane that routes only RESPONSE and ERROR to the owning gateway (every part of a
stream of the node's second gateway process would land at the first, which has no such request
and frees its slots), or that picks an instance for a CREDIT or CANCEL (the producer waiting for
credit would never get it).
"""

from __future__ import annotations

from spright.data.descriptor import (
    CANCEL,
    CREDIT,
    END,
    ERROR,
    GATEWAY,
    GATEWAY_SHIFT,
    PART,
    RESPONSE,
    Descriptor,
)
from spright.routing import App
from tests.kit.dataplane import desc, received


def two_gateways():
    app = App("app")
    for name in ("f1", "f2"):
        app.add_function(lambda ctx: None, name=name)
    app.route("/r0", ["f1", "f2"])
    return app.compile(gateways=2)


async def test_parts_and_ends_reach_the_gateway_that_owns_the_request_and_credits_their_producer(
        make_node) -> None:
    table = two_gateways()
    second = table.gateways[1]
    node = make_node(table)
    peers = await node.attach_all((GATEWAY, second, 1, 2))
    inboxes = {e: p.inbox for e, p in peers.items()}
    expected: dict[int, list[Descriptor]] = {GATEWAY: [], second: [], 1: [], 2: []}
    batch = []
    for seq in range(64):
        owner = seq % 2
        kind = (PART, END, RESPONSE, ERROR)[seq // 2 % 4]
        d = desc(GATEWAY, 1, owner << GATEWAY_SHIFT | (seq + 1), flags=kind, hop=seq % 256, slot=seq + 1,
                 length=seq * 3, generation=seq)
        batch.append(d)
        expected[second if owner else GATEWAY].append(d._replace(next_hop=second) if owner else d)
    peers[1].send(batch)
    control = [desc(2, second, 1 << GATEWAY_SHIFT | n, flags=(CREDIT, CANCEL)[n % 2], status=n) for n in range(1, 9)]
    peers[second].send(control)
    expected[2] = control
    await received(inboxes, expected)
    for endpoint, want in expected.items():
        assert inboxes[endpoint].items == want, f"endpoint {endpoint}"
