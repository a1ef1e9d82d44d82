"""The S-SPRIGHT data plane on the real kernel path: sk_msg redirect between TCP sockets.

Skipped (with the reason and the fix) only where the machine cannot run it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from spright.descriptor import NEXT_IN_CHAIN, SIZE, Descriptor, pack_many
from spright.routing import App, RouteTable
from spright.transport import bpf, skmsg
from spright.transport.base import Endpoint
from spright.transport.skmsg import ANONYMOUS, MAX_ENDPOINTS, SkmsgTransport

REASON = SkmsgTransport.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"skmsg unavailable: {REASON}")


def desc(next_hop: int, sender: int, request_id: int, length: int = 0) -> Descriptor:
    return Descriptor(next_hop, sender, 0, 0, 0, 0, 0, length, request_id, 0, 0)


def chained(chain: int, hop: int, request_id: int) -> Descriptor:
    return Descriptor(NEXT_IN_CHAIN, 0, 0, hop, chain, 0, 0, 0, request_id, 0, 0)


def make_table(functions: int, domains: dict[int, str] | None = None, chains: list[list[int]] = ()) -> RouteTable:
    """Functions f1..fN (ids 1..N; domain 'app' unless named), one route per chain."""
    app = App("app")
    for i in range(1, functions + 1):
        app.add_function(lambda ctx: None, name=f"f{i}", domain=(domains or {}).get(i))
    for n, hops in enumerate(chains or [[1]]):
        app.route(f"/r{n}", [f"f{i}" for i in hops])
    return app.compile()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SkmsgTransport]:
    t = SkmsgTransport(tmp_path, make_table(5, chains=[[1, 2, 3], [3], [2, 1, 2, 4]]))
    t.start()
    yield t
    t.stop()


class Inbox:
    """Collects what one endpoint receives; ``take(n)`` waits for n descriptors."""

    def __init__(self) -> None:
        self.items: list[Descriptor] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        assert len(data) % SIZE == 0
        self.items += [Descriptor.unpack(data[i : i + SIZE]) for i in range(0, len(data), SIZE)]
        self._changed.set()

    async def take(self, n: int, timeout: float = 2.0) -> list[Descriptor]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        taken, self.items = self.items[:n], self.items[n:]
        return taken


async def attach(t: SkmsgTransport, endpoint_id: int) -> tuple[Endpoint, Inbox]:
    inbox = Inbox()
    return await t.attach(endpoint_id, inbox), inbox


def insert_raw(t: SkmsgTransport, endpoint_id: int, sock: socket.socket) -> None:
    """Register a plain blocking socket, as attach() does, to write raw bytes through it
    (no grouping by target: the program sees the batch exactly as written)."""
    skmsg.register_socket(t.pin_dir, endpoint_id, sock)


def raw_socket(t: SkmsgTransport, endpoint_id: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", t.port))
    insert_raw(t, endpoint_id, sock)
    return sock


def delta(before: dict[int, skmsg.Counters], after: dict[int, skmsg.Counters], field: str) -> dict[int, int]:
    return {e: getattr(after[e], field) - getattr(before[e], field) for e in after}


def bpftool_ids(kind: str) -> set[int]:
    out = subprocess.run(["bpftool", "-j", kind, "show"], check=True, capture_output=True, text=True).stdout
    return {o["id"] for o in json.loads(out) if o.get("name", "").startswith("spright")}


async def test_redirect_bypasses_tcp(node: SkmsgTransport) -> None:
    a, _ = await attach(node, 1)
    _, b_inbox = await attach(node, 2)
    a.send(desc(2, 1, 42).pack())
    assert [d.request_id for d in await b_inbox.take(1)] == [42]
    await asyncio.sleep(0.05)
    assert node.tcp_bytes == 0  # the dummy listener's peers received nothing
    # ... and the check is not vacuous: a socket outside the sockhash does reach them.
    with socket.create_connection(("127.0.0.1", node.port)) as plain:
        plain.sendall(b"x" * SIZE)
        deadline = time.monotonic() + 2
        while node.tcp_bytes < SIZE and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    assert node.tcp_bytes == SIZE


async def test_one_send_batch_to_three_targets(node: SkmsgTransport) -> None:
    sender, _ = await attach(node, 1)
    inboxes = {dest: (await attach(node, dest))[1] for dest in (0, 2, 3)}
    batch = [desc(dest, 1, n) for n, dest in enumerate([2, 3, 0, 2, 3, 0, 2, 2, 3])]
    sender.send(pack_many(batch))
    for dest, inbox in inboxes.items():
        expected = [d.request_id for d in batch if d.next_hop == dest]
        assert [d.request_id for d in await inbox.take(len(expected))] == expected
        await asyncio.sleep(0.02)
        assert inbox.items == []  # each exactly once
    assert node.tcp_bytes == 0


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"])
def test_idle_loop_wakes_on_redirected_data(
    node: SkmsgTransport, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """Regression guard for lost epoll readiness on sockmap sockets: the receiving loop is
    asleep in epoll_wait (no timers due) when another thread's send() lands in its queue."""
    sender = socket.create_connection(("127.0.0.1", node.port))
    latencies: list[float] = []

    async def main() -> None:
        arrived: asyncio.Queue[float] = asyncio.Queue()
        await node.attach(2, lambda data: arrived.put_nowait(time.monotonic()))
        insert_raw(node, 3, sender)  # a blocking socket another thread can send on
        for gap in (0.0, 0.01, 0.05, 0.2) * 5:
            sent_at: list[float] = []

            def send_later(gap: float = gap, sent_at: list[float] = sent_at) -> None:
                time.sleep(gap)
                sent_at.append(time.monotonic())
                sender.sendall(desc(2, 3, 1).pack())

            threading.Thread(target=send_later).start()
            got = await asyncio.wait_for(arrived.get(), 5)
            latencies.append(got - sent_at[0])

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    sender.close()
    assert max(latencies) < 0.5, latencies


async def test_reattach_replaces_socket_of_restarted_worker(node: SkmsgTransport) -> None:
    sender, _ = await attach(node, 1)
    old, old_inbox = await attach(node, 2)
    _, other_inbox = await attach(node, 3)
    sender.send(pack_many([desc(2, 1, 1), desc(3, 1, 1)]))
    await old_inbox.take(1)
    await other_inbox.take(1)

    _, new_inbox = await attach(node, 2)  # the old socket is still open: a hung worker
    sender.send(pack_many([desc(2, 1, 2), desc(3, 1, 2)]))
    assert [d.request_id for d in await new_inbox.take(1)] == [2]
    assert [d.request_id for d in await other_inbox.take(1)] == [2]
    old.close()  # closing the replaced socket must not evict its successor
    await asyncio.sleep(0.05)
    sender.send(desc(2, 1, 3).pack())
    assert [d.request_id for d in await new_inbox.take(1)] == [3]
    assert old_inbox.items == []
    assert node.tcp_bytes == 0


async def test_unattached_destination_is_dropped_and_counted(node: SkmsgTransport) -> None:
    sender, _ = await attach(node, 1)
    _, inbox = await attach(node, 2)
    before = node.counters()
    # 5 is a known endpoint that is not attached; MAX_ENDPOINTS names no endpoint at all.
    batch = [desc(2, 1, 1), desc(5, 1, 2), desc(2, 1, 3), desc(MAX_ENDPOINTS, 1, 4), desc(2, 1, 5)]
    sender.send(pack_many(batch))
    # The rest of the batch still arrives, and the sender's socket keeps working.
    assert [d.request_id for d in await inbox.take(3)] == [1, 3, 5]
    sender.send(desc(2, 1, 6).pack())
    assert [d.request_id for d in await inbox.take(1)] == [6]
    after = node.counters()
    assert after[5].dropped - before[5].dropped == 1
    assert after[5].received == before[5].received
    assert after[1].sent - before[1].sent == 6
    assert after[1].bad_route - before[1].bad_route == 1
    assert after[2].received - before[2].received == 4
    assert node.tcp_bytes == 0


@pytest.mark.parametrize(
    ("cuts", "expected"),
    [
        ([10, 50], {1: [2], 2: [1, 3]}),  # splits after the header: every descriptor arrives
        ([32, 40, 64], {1: [2], 2: [1, 3]}),
        ([35], {1: [], 2: [1, 3]}),  # a split inside a header loses that one descriptor only
    ],
)
async def test_descriptor_split_across_writes(
    node: SkmsgTransport, cuts: list[int], expected: dict[int, list[int]]
) -> None:
    """A short write may cut a descriptor; the verdict covers its remaining bytes, so the
    rest follows to the same socket and no receiver's framing is ever broken."""
    inboxes = {dest: (await attach(node, dest))[1] for dest in expected}
    raw = socket.create_connection(("127.0.0.1", node.port))
    insert_raw(node, 3, raw)
    data = pack_many([desc(2, 3, 1), desc(1, 3, 2), desc(2, 3, 3)])
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        raw.sendall(data[start:end])
        await asyncio.sleep(0.01)
    for dest, ids in expected.items():
        assert [d.request_id for d in await inboxes[dest].take(len(ids))] == ids
    await asyncio.sleep(0.05)
    assert all(inbox.items == [] for inbox in inboxes.values())
    raw.close()
    assert node.tcp_bytes == 0


async def test_send_rejects_partial_descriptors(node: SkmsgTransport) -> None:
    sender, _ = await attach(node, 1)
    with pytest.raises(ValueError):
        sender.send(b"\0" * (SIZE + 1))


def _echo_worker(t: SkmsgTransport, ready: Any) -> None:
    async def main() -> None:
        done = asyncio.Event()

        def on_receive(data: bytes) -> None:
            d = Descriptor.unpack(data[:SIZE])
            endpoint.send(d._replace(next_hop=d.sender, sender=2).pack())
            done.set()

        endpoint = await t.attach(2, on_receive)
        ready.set()
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(0.1)

    uvloop.run(main())


async def test_spawned_worker_attaches_through_the_pins(node: SkmsgTransport) -> None:
    """The started transport pickles into a spawned process, which attaches via the pins."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    worker = ctx.Process(target=_echo_worker, args=(node, ready))
    worker.start()
    try:
        gateway, inbox = await attach(node, 0)
        assert await asyncio.to_thread(ready.wait, 20)
        gateway.send(desc(2, 0, 77).pack())
        reply = (await inbox.take(1, timeout=5))[0]
        assert (reply.sender, reply.request_id) == (2, 77)
    finally:
        await asyncio.to_thread(worker.join, 10)
    assert worker.exitcode == 0


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    before = {kind: bpftool_ids(kind) for kind in ("prog", "map")}
    t = SkmsgTransport(tmp_path, make_table(1))
    t.start()
    ours = {kind: bpftool_ids(kind) - before[kind] for kind in ("prog", "map")}
    assert len(ours["prog"]) == 1 and len(ours["map"]) == len(skmsg.MAPS)
    assert t.pin_dir.is_dir()

    async def use() -> None:
        a, _ = await attach(t, 0)
        _, inbox = await attach(t, 1)
        a.send(desc(1, 0, 1).pack())
        await inbox.take(1)  # endpoints stay open: stop() must not depend on their closing

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(use())
        t.stop()
        t.stop()  # idempotent
    assert not t.pin_dir.exists()
    deadline = time.monotonic() + 5  # the kernel frees maps and programs asynchronously
    while time.monotonic() < deadline:
        left = {kind: bpftool_ids(kind) & ours[kind] for kind in ("prog", "map")}
        if not any(left.values()):
            break
        time.sleep(0.05)
    assert left == {"prog": set(), "map": set()}


def _crash_after_start(runtime_dir: Path) -> None:
    SkmsgTransport(runtime_dir, make_table(1)).start()
    os._exit(1)  # no stop(): what a killed supervisor leaves behind


def test_next_start_sweeps_pins_of_a_crashed_supervisor(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    crashed = ctx.Process(target=_crash_after_start, args=(tmp_path / "crashed",))
    crashed.start()
    crashed.join(30)
    stale = bpf.BPF_FS / f"spright-crashed-{crashed.pid}"
    assert stale.is_dir()  # the pins outlive the process: maps and program stay loaded
    t = SkmsgTransport(tmp_path / "next", make_table(1))
    t.start()
    try:
        assert not stale.exists()
    finally:
        t.stop()


# -- routes, domains, counters, runs -------------------------------------------------------


def test_route_map_reads_back_the_compiled_table(tmp_path: Path) -> None:
    table = make_table(4, chains=[[1, 2, 3], [4], [2, 1, 2, 4], list(range(1, 5)) * 7])
    t = SkmsgTransport(tmp_path, table)
    t.start()
    try:
        assert t.read_routes() == dict(enumerate(table.chains))
        # ... and from another process's point of view: only the node file's facts.
        info = json.loads(json.dumps(t.node_info()))
        assert SkmsgTransport.live_routes(info) == dict(enumerate(table.chains))
        assert set(SkmsgTransport.live_counters(info)) == set(table.endpoints)
    finally:
        t.stop()


def test_table_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most 32 hops"):
        SkmsgTransport(tmp_path, make_table(1, chains=[[1] * 32]))  # + the gateway: 33


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


@pytest.fixture
def domains(tmp_path: Path) -> Iterator[SkmsgTransport]:
    """f1, f2 in the app's domain; f3, f4 in 'other'."""
    t = SkmsgTransport(tmp_path, make_table(4, domains={3: "other", 4: "other"}))
    t.start()
    yield t
    t.stop()


async def test_cross_domain_descriptors_are_dropped_and_counted(domains: SkmsgTransport) -> None:
    t = domains
    assert [f.domain for f in t.table.functions] == [1, 1, 2, 2]
    endpoints = {e: await attach(t, e) for e in (0, 1, 2, 3, 4)}
    before = t.counters()
    sends = {1: [2, 3, 0, 4, 2], 3: [4, 1, 0, 2, 4], 0: [1, 2, 3, 4]}
    for sender, targets in sends.items():
        endpoints[sender][0].send(pack_many([desc(dest, sender, n) for n, dest in enumerate(targets)]))
    expected: dict[int, list[tuple[int, int]]] = {e: [] for e in endpoints}
    for sender, targets in sends.items():
        for n, dest in enumerate(targets):
            if 0 in (sender, dest) or (sender < 3) == (dest < 3):  # same domain, or the gateway
                expected[dest].append((sender, n))
    for dest, (_, inbox) in endpoints.items():
        got = [(d.sender, d.request_id) for d in await inbox.take(len(expected[dest]))]
        assert sorted(got) == sorted(expected[dest])
    await asyncio.sleep(0.05)
    assert all(not inbox.items for _, inbox in endpoints.values())  # nothing else arrived
    after = t.counters()
    assert delta(before, after, "domain_drops") == {0: 0, 1: 2, 2: 0, 3: 2, 4: 0}
    assert delta(before, after, "sent") == {0: 4, 1: 5, 2: 0, 3: 5, 4: 0}
    assert delta(before, after, "received") == {0: 2, 1: 1, 2: 3, 3: 1, 4: 3}
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
    assert delta(before, after, "domain_drops") == {0: 0, 1: 0, 2: 0, 3: 2, 4: 0}
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
    gateway.send(pack_many([desc(1 + n % 2, 0, n, length) for n, length in enumerate(lengths)]))
    f1.send(pack_many([desc(0, 1, 9, 1000)] * 3))
    await inbox1.take(3)
    await inbox2.take(2)
    await gateway_inbox.take(3)
    after = node.counters()
    assert delta(before, after, "sent") == {0: 5, 1: 3, 2: 0, 3: 0, 4: 0, 5: 0}
    assert delta(before, after, "received") == {0: 3, 1: 3, 2: 2, 3: 0, 4: 0, 5: 0}
    to1, to2 = sum(lengths[0::2]), sum(lengths[1::2])
    assert delta(before, after, "bytes_sent") == {0: to1 + to2, 1: 3000, 2: 0, 3: 0, 4: 0, 5: 0}
    assert delta(before, after, "bytes_received") == {0: 3000, 1: to1, 2: to2, 3: 0, 4: 0, 5: 0}
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
        out(pack_many([desc(dest, 0, n, 1) for n, dest in enumerate(targets)]))
        for dest, inbox in inboxes.items():
            expected = [n for n, t in enumerate(targets) if t == dest]
            assert [d.request_id for d in await inbox.take(len(expected))] == expected
        same = pack_many([desc(3, 0, n, 1) for n in range(count)])
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
