"""The data-plane contract, run on every transport at the Transport/Endpoint interface.

``transport.start()``; ``ep = await transport.attach(id, on_receive)``; ``ep.send(packed)``;
``ep.close()``; ``await ep.closed()``; ``transport.stop()`` — nothing else. The suite is parametrized over the
in-process ``LocalTransport`` plus every entry of ``spright.transport.registry()``, so a
data plane added to the registry runs it without touching this file; one this machine
cannot run is skipped with its ``unavailable_reason()``.

What every transport must do (each test says what a broken one would do instead):
 1. deliver every descriptor exactly once, whole, in order per sender, for single sends
    and batches of any size (over 1024 descriptors included);
 2. split a batch for several destinations: each destination gets its own, in order,
    nobody else gets anything;
 3. honour ``addresses()``: next_hop = addresses()[chain][hop] with the descriptor's hop
    and chain set reaches table.chains[chain][hop], which sees the concrete id in next_hop;
 4. keep security domains: a function's descriptor for a function of another domain
    bounces to the sender at once as REFUSED (kind changed, next_hop = the sender, all
    else unchanged); the gateway reaches every domain (skmsg: counted as domain_drops);
 5. survive restarts: a closed endpoint gets no callback after close(), a re-attached one
    receives what senders send next, and descriptors for nobody are lost without harming
    their sender;
 6. stop cleanly: no socket file, pin, BPF program or map, socket or thread left, and
    stop() is idempotent.

Every flag a descriptor carries (the trace flag included) arrives as it was sent.

The ``sender`` field: the sk_msg program overwrites it with the kernel's idea of the sender
(the socket the descriptor was sent from); userspace transports pass it through. Every
descriptor here names its true sender, so "arrives unchanged" holds on every transport;
a forged sender is a skmsg-only matter (test_skmsg_maps.py).

Deliveries are awaited with bounded polling (``arrival``) and then asserted on content and
order; absence (nothing else arrived, nothing after close) is checked after a short settle
period (``SETTLE``). No assertion is made on elapsed time.

Its helpers and fixtures (``transport_cls``, ``make_node``) are in the tests' one kit,
tests/kit/dataplane.py; the tests are in test_contract.py (delivery), test_contract_domains.py
and test_contract_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random

from spright.data.descriptor import GATEWAY, Descriptor
from tests.kit.dataplane import (
    SETTLE,
    WAIT,
    arrival,
    by_sender,
    make_table,
    numbered,
    received,
    stream_diff,
)

# Batch sizes: single sends, small batches, and batches past 1024 descriptors (skmsg cuts
# writes at 1024 descriptors and groups by target only up to 4096; unix writes that large
# come back partial and are finished by a writer callback).
BATCHES = (1, 1, 7, 1025, 1, 64, 2048, 3, 1, 300, 4100, 33, 1, 1024, 1, 2)


async def test_every_descriptor_arrives_once_whole_and_in_order_per_sender(make_node) -> None:
    """Two senders, thousands of descriptors each, to one receiver.

    Catches: lost or duplicated descriptors (e.g. a partial write not finished or sent
    twice, a stream's tail dropped between reads), descriptors cut or glued at the wrong
    byte (a batch split inside a descriptor), reordering within a sender (grouping that is
    not stable, writes overtaking a pending buffer), and cross-talk between the senders."""
    node = make_node(make_table(3))
    peers = await node.attach_all((1, 2, 3))
    receiver = peers[3].inbox
    sent: dict[int, list[Descriptor]] = {1: [], 2: []}
    sizes = {1: BATCHES, 2: BATCHES[::-1]}  # the two senders' batch sizes differ at each step
    for step in range(len(BATCHES)):
        for sender in (1, 2):
            start = len(sent[sender])
            batch = [numbered(3, sender, seq) for seq in range(start, start + sizes[sender][step])]
            peers[sender].send(batch)
            sent[sender] += batch
        await asyncio.sleep(0)  # let the receiver run between steps: deliveries interleave

    total = sum(map(len, sent.values()))
    await arrival(lambda: len(receiver.items) >= total, timeout=4 * WAIT)
    await asyncio.sleep(SETTLE)
    assert not receiver.torn, f"batches that are not whole descriptors: {receiver.torn[:5]}"
    streams = by_sender(receiver.items)
    assert set(streams) <= {1, 2}, f"descriptors from unknown senders: {set(streams) - {1, 2}}"
    for sender in (1, 2):
        assert not (diff := stream_diff(streams.get(sender, []), sent[sender])), f"from sender {sender}: {diff}"
    assert len(receiver.items) == total
    assert peers[1].inbox.items == [] and peers[2].inbox.items == []  # nothing went back to the senders


# =============================================================================================
# 2. One send, several destinations
# =============================================================================================
async def test_a_batch_for_several_destinations_reaches_each_in_order_and_nobody_else(make_node) -> None:
    """Catches: a batch delivered whole to its first descriptor's destination, records of
    one destination reordered or given to a neighbour, a descriptor delivered to every
    endpoint or echoed to its sender, and (long batch) grouping by destination that is not
    stable. Both a function and the gateway send; endpoint 5 is attached and never named."""
    node = make_node(make_table(5))
    peers = await node.attach_all((0, 1, 2, 3, 4, 5))
    inboxes = {e: p.inbox for e, p in peers.items()}
    rng = random.Random(10)
    seq = itertools.count()
    expected: dict[int, list[Descriptor]] = {e: [] for e in peers}
    for sender, targets in ((1, (2, 3, 4, 0)), (0, (1, 2, 3, 4))):
        a, b, c, d = targets
        short = [a, b, a, c, a, a, d, b, c, c, a, d]
        runs = [t for t in targets for _ in range(rng.randint(1, 9))]  # long runs and single ones
        long = rng.sample(runs * 6, len(runs) * 6) + runs
        for pattern in (short, long):
            batch = [numbered(target, sender, next(seq)) for target in pattern]
            peers[sender].send(batch)
            for item in batch:
                expected[item.next_hop].append(item)
    await received(inboxes, expected)
    # Per destination, the order of each sender's descriptors; the two senders' may interleave.
    problems = []
    for dest, want in expected.items():
        got = by_sender(inboxes[dest].items)
        for sender, stream in by_sender(want).items():
            if diff := stream_diff(got.pop(sender, []), stream):
                problems.append(f"{sender} -> {dest}: {diff}")
        problems += [f"{sender} -> {dest}: {len(extra)} unexpected descriptors" for sender, extra in got.items()]
        if inboxes[dest].torn:
            problems.append(f"{dest}: batches that are not whole descriptors: {inboxes[dest].torn[:5]}")
    assert not problems, "\n".join(problems)
    assert inboxes[5].callbacks == 0  # never named: never called


# =============================================================================================
# 3. Chain addresses
# =============================================================================================
CHAINS = ((1, 2, 3), (3,), (2, 1, 2, 4), (4, 3))


async def test_chain_addresses_reach_every_position_of_every_chain(make_node) -> None:
    """next_hop = addresses()[chain][hop] (with hop and chain set) lands at
    table.chains[chain][hop], which sees the concrete endpoint id in next_hop.

    Catches: addresses() that do not match the route table (wrong shape, off by one hop),
    a marker the data plane does not resolve (lost or sent to the wrong endpoint), a
    receiver that is handed the marker instead of its own id, hop/chain altered in
    flight. Each position is sent by the one before it in its chain (the gateway sends
    hop 0), in one batch per sender and then one send per descriptor."""
    table = make_table(4, chains=CHAINS)
    node = make_node(table)
    addresses = node.transport.addresses()
    assert [len(named) for named in addresses] == [len(hops) for hops in table.chains], addresses
    peers = await node.attach_all(table.endpoints)
    inboxes = {e: p.inbox for e, p in peers.items()}
    positions = [(c, h) for c, hops in enumerate(table.chains) for h in range(len(hops))]
    seq = itertools.count()
    expected: dict[int, list[Descriptor]] = {e: [] for e in peers}
    for batched in (True, False):
        outgoing: dict[int, list[Descriptor]] = collections.defaultdict(list)
        for c, h in positions:
            sender = table.chains[c][h - 1] if h else GATEWAY
            outgoing[sender].append(numbered(addresses[c][h], sender, next(seq))._replace(hop=h, chain=c))
            expected[table.chains[c][h]].append(outgoing[sender][-1]._replace(next_hop=table.chains[c][h]))
        for sender, batch in outgoing.items():
            if batched:
                peers[sender].send(batch)
            else:
                for d in batch:
                    peers[sender].send([d])
    await received(inboxes, expected)
    # Descriptors from different senders may interleave: compare per sender, in order.
    for dest, want in expected.items():
        got = inboxes[dest].items
        assert not inboxes[dest].torn
        assert {d.next_hop for d in got} <= {dest}, f"endpoint {dest} saw next_hop {({d.next_hop for d in got})}"
        for sender, stream in by_sender(want).items():
            assert not (diff := stream_diff(by_sender(got).get(sender, []), stream)), f"{sender} -> {dest}: {diff}"
        assert len(got) == len(want), f"endpoint {dest}: {len(got)} received, {len(want)} expected"


# =============================================================================================
# 4. Security domains
# =============================================================================================
# f1, f2 in the app's domain (1), f3, f4 in "vault" (2); each chain stays in its domain.
