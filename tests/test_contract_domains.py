"""The data-plane contract, part 4: security domains (see test_contract.py)."""

from __future__ import annotations

import collections
import itertools
import random

from spright.data.descriptor import BODY_JSON, CALL, HAS_RESPONSE_META, Descriptor
from spright.data.table import RouteTable
from tests.kit.dataplane import (
    Node,
    allowed,
    assert_streams,
    bounced,
    desc,
    make_table,
    received,
    stream_diff,
)

DOMAIN_CHAINS = ((1, 2), (3, 4))


def domain_table() -> RouteTable:
    table = make_table(4, chains=DOMAIN_CHAINS, domains={3: "vault", 4: "vault"})
    assert [f.domain for f in table.functions] == [1, 1, 2, 2]  # what the tests below assume
    return table


def rich(next_hop: int, sender: int, request_id: int) -> Descriptor:
    """Every field set, other flag bits included: a bounce must keep all but kind and next_hop."""
    return desc(next_hop, sender, request_id, flags=CALL | BODY_JSON | HAS_RESPONSE_META, hop=3, chain=1,
                status=418, slot=0x01000005 + request_id, length=4096 + request_id, call_id=0xC0FFEE00 ^ request_id,
                generation=0xFFFFFF00 ^ request_id)


def domain_drops(node: Node, before: dict[int, object] | None) -> dict[int, int] | None:
    after = node.counters()
    if before is None or after is None:
        return None
    return {e: after[e].domain_drops - before[e].domain_drops for e in after}  # type: ignore[attr-defined]


async def test_cross_domain_descriptor_bounces_to_its_sender_as_refused(make_node) -> None:
    """Every ordered pair of endpoints, one single send each.

    Catches: a descriptor delivered across domains (the isolation broken), a refused one
    silently dropped (the sender waits for its timeout instead of learning at once),
    bounced to the wrong endpoint, with the wrong kind, with other flag bits or fields
    clobbered, or next_hop not set to the sender; the gateway refused where it must reach
    every domain; on skmsg, the kernel not counting the refusal against the sender."""
    table = domain_table()
    node = make_node(table)
    peers = await node.attach_all(table.endpoints)
    inboxes = {e: p.inbox for e, p in peers.items()}
    before = node.counters()
    seq = itertools.count()
    expected: dict[int, list[Descriptor]] = {e: [] for e in peers}
    refused_by: collections.Counter[int] = collections.Counter()
    for sender, target in itertools.permutations(table.endpoints, 2):
        d = rich(target, sender, next(seq))
        peers[sender].send([d])
        if allowed(table, sender, target):
            expected[target].append(d)
        else:
            expected[sender].append(bounced(d))
            refused_by[sender] += 1
    assert sum(refused_by.values()) == 32  # f1, f2 <-> f3, f4, two revision slots each: the test is not vacuous
    await received(inboxes, expected)
    # Senders differ: compare each inbox as a set (sorted by request id); order: next test.
    for inbox in inboxes.values():
        inbox.items.sort(key=lambda d: d.request_id)
    assert_streams(inboxes, expected)
    if (drops := domain_drops(node, before)) is not None:
        assert drops == {e: refused_by[e] for e in table.endpoints}


async def test_mixed_batch_delivers_the_allowed_and_bounces_the_refused_in_order(make_node) -> None:
    """One send() mixing allowed and refused descriptors, short and long (the long one is
    grouped by destination on skmsg), some addressed through addresses() to a chain of the
    other domain. Catches: one refused record failing or truncating the whole batch, the
    refusal leaking onto neighbouring allowed records (or the other way round), bounces out
    of order, a chain address escaping the domain check, and counters off on skmsg."""
    table = domain_table()
    node = make_node(table)
    addresses = node.transport.addresses()
    peers = await node.attach_all(table.endpoints)
    inboxes = {e: p.inbox for e, p in peers.items()}
    before = node.counters()
    rng = random.Random(4)
    seq = itertools.count()
    expected: dict[int, list[Descriptor]] = {e: [] for e in peers}
    refused_by: collections.Counter[int] = collections.Counter()
    sent: list[Descriptor] = []
    targets: list[int] = []  # the endpoint each of ``sent`` was meant for
    # Chain 0 is (1, 2, gateway) in the app's domain, chain 1 is (3, 4, gateway) in vault.
    positions: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)  # endpoint -> (chain, hop)s
    for c, hops in enumerate(table.chains):
        for h, at in enumerate(hops):
            positions[at].append((c, h))
    for sender in (1, 3):
        others = [e for e in table.endpoints if e != sender]
        short = [others[i] for i in (1, 2, 0, 3, 1, 2, 2, 1, 0, 3)]
        long = [rng.choice(others) for _ in range(400)]
        for pattern in (short, long):
            batch: list[Descriptor] = []
            for target in pattern:
                d = rich(target, sender, next(seq))
                if positions[target] and rng.random() < 0.25:  # the same target, named by a chain position
                    c, h = rng.choice(positions[target])
                    d = d._replace(next_hop=addresses[c][h], hop=h, chain=c)
                batch.append(d)
                sent.append(d)
                targets.append(target)
                if allowed(table, sender, target):
                    expected[target].append(d._replace(next_hop=target))
                else:
                    expected[sender].append(bounced(d))  # next_hop = sender; hop and chain kept
                    refused_by[sender] += 1
            peers[sender].send(batch)
    assert refused_by[1] > 0 and refused_by[3] > 0
    await received(inboxes, expected)
    # One stream per (receiving endpoint, sender, intended target): allowed descriptors in
    # order per destination; bounces in order per intended target. The order of bounces for
    # different intended targets is not part of the contract (skmsg groups a batch by target
    # before the kernel sees it).
    intended = {d.request_id: target for d, target in zip(sent, targets, strict=True)}

    def streams(inbox: int, items: list[Descriptor]) -> dict[tuple[int, int, int], list[Descriptor]]:
        split: dict[tuple[int, int, int], list[Descriptor]] = collections.defaultdict(list)
        for d in items:
            split[inbox, d.sender, intended.get(d.request_id, -1)].append(d)
        return split

    problems = [f"endpoint {e}: batches that are not whole descriptors" for e, i in inboxes.items() if i.torn]
    want = {k: v for e, items in expected.items() for k, v in streams(e, items).items()}
    got = {k: v for e, inbox in inboxes.items() for k, v in streams(e, inbox.items).items()}
    for key in sorted(want.keys() | got.keys()):
        if diff := stream_diff(got.get(key, []), want.get(key, [])):
            at, sender, target = key
            problems.append(f"at {at} from {sender} meant for {target}: {diff}")
    assert not problems, "\n".join(problems)
    if (drops := domain_drops(node, before)) is not None:
        assert drops == {e: refused_by[e] for e in table.endpoints}


# =============================================================================================
# 5. Restart and re-attach
# =============================================================================================
