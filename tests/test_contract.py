"""The data-plane contract, run on every transport at the Transport/Endpoint interface.

``transport.start()``; ``ep = await transport.attach(id, on_receive)``; ``ep.send(packed)``;
``ep.close()``; ``transport.stop()`` — nothing else. The suite is parametrized over the
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

The ``sender`` field: the sk_msg program overwrites it with the kernel's idea of the sender
(the socket the descriptor was sent from); userspace transports pass it through. Every
descriptor here names its true sender, so "arrives unchanged" holds on every transport;
a forged sender is a skmsg-only matter (test_skmsg_maps.py).

Deliveries are awaited with bounded polling (``arrival``) and then asserted on content and
order; absence (nothing else arrived, nothing after close) is checked after a short settle
period (``SETTLE``). No assertion is made on elapsed time.

Self-contained on purpose (no conftest fixture, no tests/skmsg_kit.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import stat
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import pytest

from spright.descriptor import (
    BODY_JSON,
    BODY_TEXT,
    CALL,
    GATEWAY,
    HAS_RESPONSE_META,
    KIND_MASK,
    REFUSED,
    REPLY,
    REQUEST,
    RESPONSE,
    SIZE,
    Descriptor,
    unpack_many,
)
from spright.routing import App, RouteTable
from spright.transport import registry
from spright.transport.base import Endpoint, Transport
from spright.transport.local import LocalTransport

SETTLE = 0.2  # seconds given to stray deliveries before asserting that none came
WAIT = 5.0  # upper bound on waiting for expected deliveries
BPF_FS = Path("/sys/fs/bpf")


# -- the transports -------------------------------------------------------------------------
def every_transport() -> dict[str, type[Transport]]:
    """The in-process broker plus every data plane users can choose."""
    return {"local": LocalTransport, **registry()}


def _transport_params() -> Iterator[object]:
    for name, cls in every_transport().items():
        reason = cls.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"{name} unavailable: {reason}")] if reason else []
        yield pytest.param(cls, id=name, marks=marks)


@pytest.fixture(params=list(_transport_params()))
def transport_cls(request: pytest.FixtureRequest) -> type[Transport]:
    return request.param  # type: ignore[no-any-return]


# -- route tables -----------------------------------------------------------------------------
def make_table(functions: int, chains: Iterable[Iterable[int]] = ((1,),),
               domains: dict[int, str] | None = None) -> RouteTable:
    """Functions f1..fN (ids 1..N, the app's domain unless ``domains`` names another), one
    route per chain of function ids (compile() appends the gateway to each)."""
    app = App("app")
    for i in range(1, functions + 1):
        app.add_function(lambda ctx: None, name=f"f{i}", domain=(domains or {}).get(i))
    for n, hops in enumerate(chains):
        app.route(f"/r{n}", [f"f{i}" for i in hops])
    return app.compile()


# -- endpoints that record what they receive -------------------------------------------------
class Inbox:
    """An ``on_receive`` that keeps every descriptor, counts callbacks, and notes what
    would be a contract violation (a batch that is not whole descriptors, a callback after
    the endpoint was closed) instead of raising inside the transport's callback."""

    def __init__(self, endpoint_id: int) -> None:
        self.endpoint_id = endpoint_id
        self.items: list[Descriptor] = []
        self.callbacks = 0
        self.torn: list[int] = []  # lengths of batches that were not whole descriptors
        self.closed = False
        self.after_close: list[Descriptor] = []

    def __call__(self, data: bytes) -> None:
        self.callbacks += 1
        if len(data) % SIZE:
            self.torn.append(len(data))
            return
        got = unpack_many(data)
        if self.closed:
            self.after_close += got
        else:
            self.items += got


class Peer:
    """One attached endpoint: its Endpoint and its Inbox."""

    def __init__(self, endpoint_id: int, endpoint: Endpoint, inbox: Inbox) -> None:
        self.id = endpoint_id
        self.endpoint = endpoint
        self.inbox = inbox
        self.closed = False

    def send(self, descriptors: Iterable[Descriptor]) -> None:
        """One ``send()`` carrying all of ``descriptors``."""
        self.endpoint.send(b"".join(d.pack() for d in descriptors))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.endpoint.close()
            self.inbox.closed = True  # from here on, any callback is a violation


class Node:
    """A started transport and the peers attached to it."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.peers: list[Peer] = []

    async def attach(self, endpoint_id: int) -> Peer:
        inbox = Inbox(endpoint_id)
        endpoint = await self.transport.attach(endpoint_id, inbox)
        peer = Peer(endpoint_id, endpoint, inbox)
        self.peers.append(peer)
        return peer

    async def attach_all(self, endpoint_ids: Iterable[int]) -> dict[int, Peer]:
        return {e: await self.attach(e) for e in endpoint_ids}

    def counters(self) -> dict[int, object] | None:
        """The data plane's own per-endpoint counters (skmsg: the kernel's), else None."""
        read = getattr(self.transport, "counters", None)
        return read() if callable(read) else None

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.transport.stop()


@pytest.fixture
async def make_node(transport_cls: type[Transport], tmp_path: Path) -> AsyncIterator[Callable[[RouteTable], Node]]:
    """``make_node(table)``: a started transport of the parametrized kind; closed and
    stopped after the test."""
    nodes: list[Node] = []

    def make(table: RouteTable) -> Node:
        runtime_dir = tmp_path / f"rt{len(nodes)}"
        runtime_dir.mkdir()
        transport = transport_cls(runtime_dir, table)
        transport.start()
        nodes.append(Node(transport))
        return nodes[-1]

    yield make
    for node in nodes:
        node.close()


# -- descriptors ------------------------------------------------------------------------------
def desc(next_hop: int, sender: int, request_id: int, *, flags: int = REQUEST, hop: int = 0, chain: int = 0,
         status: int = 0, slot: int = 0, length: int = 0, call_id: int = 0, generation: int = 0) -> Descriptor:
    return Descriptor(next_hop=next_hop, sender=sender, flags=flags, hop=hop, chain=chain, status=status, slot=slot,
                      length=length, request_id=request_id, call_id=call_id, generation=generation)


_KINDS = (REQUEST, CALL, REPLY, RESPONSE)


def numbered(next_hop: int, sender: int, seq: int) -> Descriptor:
    """Descriptor number ``seq`` (its request_id) with every other field derived from it,
    so a descriptor that arrives torn, shifted or mixed with another no longer compares
    equal to the one sent."""
    return desc(
        next_hop, sender, seq,
        flags=_KINDS[seq % 4] | (BODY_JSON, BODY_TEXT, HAS_RESPONSE_META)[seq % 3],
        hop=seq % 31, chain=seq % 997, status=200 + seq % 400, slot=(seq * 7919) & 0xFFFFFFFF,
        length=seq * 13, call_id=sender << 20 | seq, generation=(seq * 2654435761) & 0xFFFFFFFF,
    )


def bounced(d: Descriptor) -> Descriptor:
    """What the sender of ``d`` gets back when ``d`` crosses a security domain."""
    return d._replace(next_hop=d.sender, flags=(d.flags & ~KIND_MASK) | REFUSED)


def allowed(table: RouteTable, sender: int, target: int) -> bool:
    """The domain rule, stated independently of the transports' own implementation."""
    domain = [0, *(f.domain for f in table.functions)]
    return GATEWAY in (sender, target) or domain[sender] == domain[target]


# -- waiting and comparing --------------------------------------------------------------------
async def arrival(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll until ``condition()`` holds or ``timeout`` passes (the caller asserts after)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.005)


async def received(inboxes: dict[int, Inbox], expected: dict[int, list[Descriptor]], timeout: float = WAIT) -> None:
    """Wait until every inbox holds at least what it should, then give strays time."""
    await arrival(lambda: all(len(inboxes[e].items) >= len(want) for e, want in expected.items()), timeout)
    await asyncio.sleep(SETTLE)


def stream_diff(got: list[Descriptor], want: list[Descriptor]) -> str:
    """'' when equal, else a short account of how they differ (lists may be thousands long)."""
    if got == want:
        return ""
    first = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), min(len(got), len(want)))
    got_count, want_count = collections.Counter(got), collections.Counter(want)
    missing = sum((want_count - got_count).values())
    extra = sum((got_count - want_count).values())
    return (f"{len(got)} received, {len(want)} expected; {missing} missing, {extra} unexpected or duplicated; "
            f"first difference at #{first}: got {got[first] if first < len(got) else 'nothing'}, "
            f"expected {want[first] if first < len(want) else 'nothing'}")


def assert_streams(inboxes: dict[int, Inbox], expected: dict[int, list[Descriptor]]) -> None:
    """Each inbox holds exactly its expected descriptors, in that order, whole."""
    problems = []
    for endpoint_id, want in expected.items():
        inbox = inboxes[endpoint_id]
        if inbox.torn:
            problems.append(f"endpoint {endpoint_id}: batches that are not whole descriptors: {inbox.torn[:5]}")
        if diff := stream_diff(inbox.items, want):
            problems.append(f"endpoint {endpoint_id}: {diff}")
    assert not problems, "\n".join(problems)


def by_sender(items: list[Descriptor]) -> dict[int, list[Descriptor]]:
    split: dict[int, list[Descriptor]] = collections.defaultdict(list)
    for d in items:
        split[d.sender].append(d)
    return split


# =============================================================================================
# 1. Delivery and order per sender
# =============================================================================================
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
    assert sum(refused_by.values()) == 8  # 1,2 <-> 3,4: the test is not vacuous
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
async def test_reattached_endpoint_receives_what_senders_send_next(make_node) -> None:
    """Endpoint 2 closes (its worker died), nobody is attached for a while, then id 2
    attaches again with a new receiver.

    Catches: a sender whose cached connection to the old endpoint breaks it for good (its
    later sends to anyone fail), descriptors delivered to the old callback after close
    (a connection to the dead endpoint still served), descriptors sent while nobody was
    attached queued and delivered to the successor, and a restarted endpoint that cannot
    send."""
    node = make_node(make_table(3))
    peers = await node.attach_all((1, 2, 3))
    sender, old, other = peers[1], peers[2], peers[3]

    def ids(items: list[Descriptor]) -> list[int]:
        return [d.request_id for d in items]

    sender.send([desc(2, 1, 1), desc(3, 1, 2), desc(2, 1, 3)])
    await arrival(lambda: len(old.inbox.items) >= 2 and len(other.inbox.items) >= 1)
    assert (ids(old.inbox.items), ids(other.inbox.items)) == ([1, 3], [2])

    old.close()
    await asyncio.sleep(SETTLE)  # let the transport notice (connections drop, sockets leave maps)
    sender.send([desc(2, 1, 4)])  # nobody attached: lost
    sender.send([desc(2, 1, 5), desc(3, 1, 6), desc(2, 1, 7)])
    sender.send([desc(3, 1, 8)])
    await arrival(lambda: len(other.inbox.items) >= 3)
    assert ids(other.inbox.items) == [2, 6, 8], "the sender broke after its peer closed"

    new = await node.attach(2)
    sender.send([desc(2, 1, 9)])
    sender.send([desc(2, 1, 10), desc(3, 1, 11), desc(2, 1, 12)])
    new.send([desc(1, 2, 13)])  # the restarted endpoint sends too
    await arrival(lambda: len(new.inbox.items) >= 3 and len(other.inbox.items) >= 4 and len(sender.inbox.items) >= 1)
    await asyncio.sleep(SETTLE)
    assert ids(old.inbox.after_close) == [], "the closed endpoint's callback still ran"
    assert ids(new.inbox.items) == [9, 10, 12], "the re-attached endpoint did not get exactly what was sent next"
    assert ids(other.inbox.items) == [2, 6, 8, 11]
    assert ids(sender.inbox.items) == [13]
    assert ids(old.inbox.items) == [1, 3]
    assert not (old.inbox.torn or new.inbox.torn or other.inbox.torn)


async def test_closed_endpoint_gets_no_callback_even_for_descriptors_in_flight(make_node) -> None:
    """Descriptors sent to an endpoint that closes before its loop got to them: they may
    be lost, but its callback must not run after close() returned (a dead worker's
    receiver must never be handed work). Catches deliveries already scheduled or queued at
    close time that still reach the closed receiver."""
    node = make_node(make_table(2))
    peers = await node.attach_all((1, 2))
    peers[1].send([desc(2, 1, 0)])  # connections, where the data plane has any, are set up
    await arrival(lambda: bool(peers[2].inbox.items))
    assert [d.request_id for d in peers[2].inbox.items] == [0]
    for n in range(1, 21):
        peers[1].send([desc(2, 1, n)])
    peers[1].send([desc(2, 1, 100 + n) for n in range(500)])
    peers[2].close()  # same loop turn: nothing was delivered yet
    await asyncio.sleep(SETTLE)
    assert peers[2].inbox.after_close == [], (
        f"{len(peers[2].inbox.after_close)} descriptors handed to the callback after close()")
    # ... and the sender is unharmed: a successor gets its next descriptor.
    replacement = await node.attach(2)
    peers[1].send([desc(2, 1, 999)])
    await arrival(lambda: bool(replacement.inbox.items))
    assert [d.request_id for d in replacement.inbox.items] == [999]


async def test_descriptor_for_nobody_is_lost_without_harming_its_sender(make_node) -> None:
    """Endpoint 4 is in the table but never attached. Catches: a send to it that raises,
    closes or wedges the sender's endpoint (skmsg: a dropped lone descriptor fails the
    send() with EACCES and the loop closes the socket), truncates the rest of its batch, or
    is delivered to someone else."""
    node = make_node(make_table(4))
    peers = await node.attach_all((0, 1, 2))
    inboxes = {e: p.inbox for e, p in peers.items()}
    peers[1].send([desc(4, 1, 1)])  # alone
    peers[0].send([desc(4, 0, 2)])  # from the gateway too
    peers[1].send([desc(2, 1, 3), desc(4, 1, 4), desc(2, 1, 5), desc(4, 1, 6), desc(0, 1, 7)])
    peers[1].send([desc(4, 1, 8)] * 40 + [desc(2, 1, 9)])  # long enough to be grouped
    await asyncio.sleep(SETTLE)
    peers[1].send([desc(2, 1, 10)])  # later sends still work ...
    peers[0].send([desc(1, 0, 11)])  # ... and the sender still receives
    peers[0].send([desc(4, 0, 12), desc(2, 0, 13)])
    expected = {0: [desc(0, 1, 7)], 1: [desc(1, 0, 11)],
                2: [desc(2, 1, 3), desc(2, 1, 5), desc(2, 1, 9), desc(2, 1, 10), desc(2, 0, 13)]}
    await received(inboxes, expected)
    inboxes[2].items.sort(key=lambda d: (d.sender != 1, d.request_id))  # the gateway's may come first
    assert_streams(inboxes, expected)


# =============================================================================================
# 6. Clean stop
# =============================================================================================
def _fdinfo(fd: str, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return None


def own_handles() -> dict[str, set[object]]:
    """What this process holds: sockets (by inode), BPF programs and maps (by kernel id),
    threads."""
    held: dict[str, set[object]] = {"socket": set(), "prog": set(), "map": set()}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            held["socket"].add(target)
        elif target == "anon_inode:bpf-prog":
            held["prog"].add(_fdinfo(fd, "prog_id"))
        elif target == "anon_inode:bpf-map":
            held["map"].add(_fdinfo(fd, "map_id"))
    held["thread"] = {t for t in threading.enumerate() if t.is_alive()}
    return held


def loaded_bpf(kind: str) -> set[int] | None:
    """Ids of every BPF program/map on the machine (pins keep them alive with no fd)."""
    if shutil.which("bpftool") is None:
        return None
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True, check=True).stdout
    return {o["id"] for o in json.loads(out or "[]")}


def pins(runtime_dir: Path) -> set[Path]:
    """Entries under the bpffs that belong to this node: named after its runtime dir or
    this process (other sessions' nodes run concurrently on this machine)."""
    if not BPF_FS.is_dir():
        return set()
    mine = (re.sub(r"[^A-Za-z0-9_]", "_", runtime_dir.name), f"-{os.getpid()}")
    return {p for p in BPF_FS.iterdir() if any(m in p.name for m in mine)}


def socket_files(runtime_dir: Path) -> set[Path]:
    return {p for p in runtime_dir.rglob("*") if stat.S_ISSOCK(p.lstat().st_mode)}


async def test_stop_leaves_nothing_behind_and_is_idempotent(transport_cls: type[Transport], tmp_path: Path) -> None:
    """Catches: socket files left in the runtime dir, a pin directory left on the bpffs, BPF
    programs or maps still loaded (a pin or fd kept), sockets or threads of the data plane
    still open in this process (connections accepted for a closed endpoint, the dummy
    peer), and a second stop() that raises."""
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    name = transport_cls.name
    held_before, pins_before = own_handles(), pins(runtime_dir)
    node = Node(transport_cls(runtime_dir, make_table(3, chains=[(1, 2, 3)])))
    node.transport.start()
    held_started = own_handles()
    ours = {kind: held_started[kind] - held_before[kind] for kind in ("prog", "map")}
    our_pins = pins(runtime_dir) - pins_before
    try:
        peers = await node.attach_all((0, 1, 2, 3))
        for sender, target in itertools.permutations(peers, 2):  # every connection gets made
            peers[sender].send([desc(target, sender, sender * 10 + target)])
        await arrival(lambda: all(len(p.inbox.items) == 3 for p in peers.values()))
        assert all(len(p.inbox.items) == 3 for p in peers.values())
        seen_sockets = socket_files(runtime_dir)
        if name == "unix":  # the checks below are not vacuous
            assert len(seen_sockets) == 4
        if name == "skmsg":
            assert ours["prog"] and ours["map"] and our_pins
    finally:
        for peer in node.peers:
            peer.close()
        node.transport.stop()
    node.transport.stop()  # idempotent: no error ...

    def leftovers() -> dict[str, object]:
        held = own_handles()
        left: dict[str, object] = {
            "socket files": socket_files(runtime_dir),
            "pins": {p for p in our_pins | (pins(runtime_dir) - pins_before) if p.exists()},
            "bpf fds": {k: held[k] - held_before[k] for k in ("prog", "map") if held[k] - held_before[k]},
            "sockets": held["socket"] - held_before["socket"],
            "threads": {t.name for t in held["thread"] - held_before["thread"]},
        }
        for kind in ("prog", "map"):  # the kernel frees them asynchronously once unreferenced
            loaded = loaded_bpf(kind)
            if loaded is not None and ours[kind] & loaded:
                left[f"loaded {kind}s"] = ours[kind] & loaded
        return {what: found for what, found in left.items() if found}

    await arrival(lambda: not leftovers())
    assert leftovers() == {}
    node.transport.stop()  # ... and still nothing after a third
    assert leftovers() == {}
