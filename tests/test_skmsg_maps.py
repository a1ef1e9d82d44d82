"""The sk_msg program's maps on the real kernel path: routes resolved in the kernel, security
domains, per-endpoint counters, long mixed batches."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from spright.data.descriptor import REFUSED, SIZE, Descriptor, pack_many
from spright.data.table import MAX_HOPS
from spright.transport import bpf, skmsg
from spright.transport.skmsg import ANONYMOUS, SkmsgTransport
from tests.kit.dataplane import attach, chained, desc, make_table, started
from tests.kit.kernel import delta, raw_socket

pytestmark = pytest.mark.kernel  # skipped with the reason where unavailable (conftest.py)


def test_route_map_reads_back_the_compiled_table(tmp_path: Path) -> None:
    table = make_table(4, chains=[[1, 2, 3], [4], [2, 1, 2, 4], list(range(1, 5)) * 7])
    t = started(SkmsgTransport(tmp_path, table))
    try:
        assert t.read_routes() == dict(enumerate(table.chains))
        # ... and from another process's point of view: only the node file's facts.
        info = json.loads(json.dumps(t.node_info()))
        assert SkmsgTransport.live_routes(info) == dict(enumerate(table.chains))
        assert set(SkmsgTransport.live_counters(info)) == set(table.endpoints)
    finally:
        t.stop()


def test_a_chain_the_route_map_cannot_hold_never_reaches_it() -> None:
    """The map's row per chain is MAX_HOPS long: compile refuses a longer chain for every plane."""
    make_table(1, chains=[[1] * (MAX_HOPS - 1)])  # + the gateway: MAX_HOPS positions, the most
    with pytest.raises(ValueError, match=f"a chain holds at most {MAX_HOPS - 1}"):
        make_table(1, chains=[[1] * MAX_HOPS])


async def test_next_in_chain_is_resolved_and_rewritten_in_the_kernel(node: SkmsgTransport) -> None:
    gateway, gateway_inbox = await attach(node, 0)
    inboxes = {e: (await attach(node, e))[1] for e in (1, 2, 3, 4)}
    chains = node.table.chains
    wanted = [(c, h) for c in range(len(chains)) for h in range(len(chains[c]))]
    gateway.send(pack_many([chained(c, h, n) for n, (c, h) in enumerate(wanted)]))
    for target, inbox in {0: gateway_inbox, **inboxes}.items():
        expected = [n for n, (c, h) in enumerate(wanted) if chains[c][h] == target]
        got = await inbox.take(len(expected))
        assert [d.request_id for d in got] == expected
        assert {d.next_hop for d in got} == {target}  # the receiver sees a concrete id
        assert {d.sender for d in got} == {0}


async def test_next_in_chain_without_a_route_is_discarded_and_counted(node: SkmsgTransport) -> None:
    _, inbox = await attach(node, 2)
    before = node.counters()
    raw = raw_socket(node, 1)
    # hop past the chain's end, unknown chain, chain id past the map: each between good ones
    bad = [chained(1, 2, 90), chained(7, 0, 91), chained(0xFFFF, 0, 92)]
    raw.sendall(pack_many([chained(0, 1, 1), bad[0], chained(0, 1, 2), *bad[1:], chained(2, 0, 3)]))
    assert [d.request_id for d in await inbox.take(3)] == [1, 2, 3]
    raw.close()
    after = node.counters()
    assert delta(before, after, "bad_route")[1] == 3
    assert delta(before, after, "sent")[1] == 6
    assert node.tcp_bytes == 0


def functions(t: SkmsgTransport, counts: dict[int, int]) -> dict[int, int]:
    """At the gateway's and the functions' own endpoints (not their spare revision slots')."""
    return {endpoint: count for endpoint, count in counts.items() if endpoint <= len(t.table.functions)}


@pytest.fixture
def domains(tmp_path: Path) -> Iterator[SkmsgTransport]:
    """f1, f2 in the app's domain; f3, f4 in 'other'."""
    t = started(SkmsgTransport(tmp_path, make_table(4, domains={3: "other", 4: "other"})))
    yield t
    t.stop()


async def test_cross_domain_descriptors_bounce_to_their_sender_and_are_counted(domains: SkmsgTransport) -> None:
    t = domains
    assert [f.domain for f in t.table.functions] == [1, 1, 2, 2]
    endpoints = {e: await attach(t, e) for e in (0, 1, 2, 3, 4)}
    before = t.counters()
    sends = {1: [2, 3, 0, 4, 2], 3: [4, 1, 0, 2, 4], 0: [1, 2, 3, 4]}
    for sender, targets in sends.items():
        endpoints[sender][0].send(pack_many([desc(dest, sender, n) for n, dest in enumerate(targets)]))
    expected: dict[int, list[tuple[int, int, int]]] = {e: [] for e in endpoints}  # (sender, request, kind)
    for sender, targets in sends.items():
        for n, dest in enumerate(targets):
            if 0 in (sender, dest) or (sender < 3) == (dest < 3):  # same domain, or the gateway
                expected[dest].append((sender, n, 0))
            else:  # refused: back to the sender, marked REFUSED
                expected[sender].append((sender, n, REFUSED))
    for dest, (_, inbox) in endpoints.items():
        got = [(d.sender, d.request_id, d.kind) for d in await inbox.take(len(expected[dest]))]
        assert sorted(got) == sorted(expected[dest])
    await asyncio.sleep(0.05)
    assert all(not inbox.items for _, inbox in endpoints.values())  # nothing else arrived
    after = t.counters()
    assert functions(t, delta(before, after, "domain_drops")) == {0: 0, 1: 2, 2: 0, 3: 2, 4: 0}
    assert functions(t, delta(before, after, "sent")) == {0: 4, 1: 5, 2: 0, 3: 5, 4: 0}
    assert functions(t, delta(before, after, "received")) == {0: 2, 1: 1, 2: 3, 3: 1, 4: 3}, \
        "bounces are not receptions"
    assert t.tcp_bytes == 0


async def test_forged_sender_field_does_not_fool_the_domain_check(domains: SkmsgTransport) -> None:
    t = domains
    _, inbox1 = await attach(t, 1)
    _, gateway_inbox = await attach(t, 0)
    before = t.counters()
    raw = raw_socket(t, 3)  # endpoint 3 (domain 'other') claims to be 2 (the app's domain)
    raw.sendall(pack_many([desc(1, 2, 1), desc(0, 2, 2), desc(1, 0, 3)]))
    got = await gateway_inbox.take(1)
    assert [(d.request_id, d.sender) for d in got] == [(2, 3)]  # stamped with the true sender
    await asyncio.sleep(0.05)
    assert inbox1.items == []
    after = t.counters()
    assert functions(t, delta(before, after, "domain_drops")) == {0: 0, 1: 0, 2: 0, 3: 2, 4: 0}
    assert delta(before, after, "sent")[2] == 0  # counted against the real sender
    # A socket nobody registered (in the sockhash, its port unknown) sends nothing anywhere.
    anonymous = socket.create_connection(("127.0.0.1", t.port))
    with bpf.PinnedMap(t.pin_dir / "socks") as socks:
        socks.update(4, anonymous.fileno())
    anon_before = skmsg.read_counters(t.pin_dir, [ANONYMOUS])[ANONYMOUS]
    anonymous.sendall(pack_many([desc(0, 0, 4), desc(1, 1, 5)]))
    await asyncio.sleep(0.05)
    assert gateway_inbox.items == [] and inbox1.items == []
    anon_after = skmsg.read_counters(t.pin_dir, [ANONYMOUS])[ANONYMOUS]
    assert anon_after.domain_drops - anon_before.domain_drops == 2
    raw.close()
    anonymous.close()
    assert t.tcp_bytes == 0


async def test_counters_match_what_was_sent(node: SkmsgTransport) -> None:
    gateway, gateway_inbox = await attach(node, 0)
    f1, inbox1 = await attach(node, 1)
    _, inbox2 = await attach(node, 2)
    before = node.counters()
    lengths = [0, 10, 1 << 20, 7, 123_456]
    gateway.send(pack_many([desc(1 + n % 2, 0, n, length=length) for n, length in enumerate(lengths)]))
    f1.send(pack_many([desc(0, 1, 9, length=1000)] * 3))
    await inbox1.take(3)
    await inbox2.take(2)
    await gateway_inbox.take(3)
    after = node.counters()
    assert functions(node, delta(before, after, "sent")) == {0: 5, 1: 3, 2: 0, 3: 0, 4: 0, 5: 0}
    assert functions(node, delta(before, after, "received")) == {0: 3, 1: 3, 2: 2, 3: 0, 4: 0, 5: 0}
    to1, to2 = sum(lengths[0::2]), sum(lengths[1::2])
    assert functions(node, delta(before, after, "bytes_sent")) == {0: to1 + to2, 1: 3000, 2: 0, 3: 0, 4: 0, 5: 0}
    assert functions(node, delta(before, after, "bytes_received")) == {0: 3000, 1: to1, 2: to2, 3: 0, 4: 0, 5: 0}
    for field in ("dropped", "redirect_failed", "domain_drops", "bad_route"):
        assert set(delta(before, after, field).values()) == {0}, field


@pytest.mark.parametrize("count", [3, 255, 256, 257, 1000, 2500])
async def test_long_mixed_batches_arrive_in_order_per_destination(node: SkmsgTransport, count: int) -> None:
    """Runs cover up to MAX_RUN descriptors of the linear data; batches longer than that,
    or than one write (MAX_WRITE), or cut by page-frag boundaries, lose nothing."""
    sender, _ = await attach(node, 1)
    inboxes = {e: (await attach(node, e))[1] for e in (2, 3)}
    raw = raw_socket(node, 4)  # ungrouped: runs as long as the data makes them
    for out in (sender.send, raw.sendall):
        targets = [2 if n % 7 < 5 else 3 for n in range(count)]  # runs of 5 and 2
        out(pack_many([desc(dest, 0, n, length=1) for n, dest in enumerate(targets)]))
        for dest, inbox in inboxes.items():
            expected = [n for n, t in enumerate(targets) if t == dest]
            assert [d.request_id for d in await inbox.take(len(expected))] == expected
        same = pack_many([desc(3, 0, n, length=1) for n in range(count)])
        out(same)
        assert [d.request_id for d in await inboxes[3].take(count)] == list(range(count))
    raw.close()
    await asyncio.sleep(0.02)
    assert all(not inbox.items for inbox in inboxes.values())
    assert node.tcp_bytes == 0


def test_grouping_keeps_each_destinations_order(node: SkmsgTransport) -> None:
    endpoint = skmsg._SkmsgEndpoint(None, node, 1, 0)  # type: ignore[arg-type]
    # targets 2, 3, 0, 3, 2, 0 (explicit or via chains), repeated with new request ids
    kinds = [
        lambda n: desc(2, 1, n),
        lambda n: chained(1, 0, n),
        lambda n: desc(0, 1, n),
        lambda n: chained(0, 2, n),
        lambda n: chained(2, 0, n),
        lambda n: chained(0, 3, n),
    ]
    mixed = [kinds[n % 6](n) for n in range(48)]
    data = endpoint._grouped(pack_many(mixed))
    got = [Descriptor.unpack(data[i : i + SIZE]) for i in range(0, len(data), SIZE)]
    target = {n: [2, 3, 0, 3, 2, 0][n % 6] for n in range(48)}
    assert sorted(d.request_id for d in got) == list(range(48))
    by_target = [target[d.request_id] for d in got]
    assert sum(a != b for a, b in itertools.pairwise(by_target)) == 2  # one run per destination
    for dest in (0, 2, 3):
        ids = [d.request_id for d in got if target[d.request_id] == dest]
        assert ids == sorted(ids)  # each destination's order kept
    already = pack_many(sorted(mixed, key=lambda d: target[d.request_id]))
    assert endpoint._grouped(already) is already  # nothing to gain: sent as is
    same = pack_many([chained(0, 0, n) for n in range(40)])
    assert endpoint._grouped(same) is same


async def test_ports_follow_attach_close_and_replace(node: SkmsgTransport) -> None:
    def ports() -> dict[int, int]:
        with bpf.PinnedMap(node.pin_dir / "ports") as m:
            return {port: m.lookup(port) for port in m.snapshot_keys()}

    first, _ = await attach(node, 1)
    other, _ = await attach(node, 2)
    assert sorted(ports().values()) == [1, 2]
    second, _ = await attach(node, 1)  # a restarted worker: the old port goes
    assert sorted(ports().values()) == [1, 2]
    first.close()  # the replaced endpoint's close must not remove its successor's port
    assert sorted(ports().values()) == [1, 2]
    second.close()
    other.close()
    assert ports() == {}
