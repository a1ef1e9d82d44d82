"""The S-SPRIGHT data plane on the real kernel path: sk_msg redirect between TCP sockets —
delivery, wake-ups, attach/restart, teardown. Routes, domains and counters: test_skmsg_maps.py.

Skipped (with the reason and the fix) only where the machine cannot run it, and failed instead
under SPRIGHT_REQUIRE_SKMSG=1 (conftest.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from spright.data.descriptor import SIZE, Descriptor, pack_many
from spright.transport import bpf, skmsg
from spright.transport.skmsg import MAX_ENDPOINTS, SkmsgTransport
from tests.kit.dataplane import attach, desc, make_table, started
from tests.kit.kernel import bpf_objects, insert_raw, still_loaded

pytestmark = pytest.mark.kernel  # skipped with the reason where unavailable (conftest.py)


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
            got = await asyncio.wait_for(arrived.get(), 10)
            latencies.append(got - sent_at[0])

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    sender.close()
    # A delivered wake-up takes microseconds; a lost one leaves the loop asleep until its only
    # timer, wait_for's 10 s (or for good). 3 s tells them apart on however loaded a machine.
    assert max(latencies) < 3, latencies


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
    t = started(SkmsgTransport(tmp_path, make_table(1)))
    ours = bpf_objects(t.pin_dir)  # not "what appeared meanwhile": other nodes may start too
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
        left = still_loaded(ours)
        if not any(left.values()):
            break
        time.sleep(0.05)
    assert left == {"prog": set(), "map": set()}


def _crash_after_start(runtime_dir: Path) -> None:
    runtime_dir.mkdir()
    started(SkmsgTransport(runtime_dir, make_table(1)))
    os._exit(1)  # no stop(): what a killed supervisor leaves behind


def test_next_start_sweeps_pins_of_a_crashed_supervisor(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    crashed = ctx.Process(target=_crash_after_start, args=(tmp_path / "crashed",))
    crashed.start()
    crashed.join(30)
    stale = bpf.BPF_FS / f"spright-crashed-{crashed.pid}"
    assert stale.is_dir()  # the pins outlive the process: maps and program stay loaded
    (tmp_path / "next").mkdir()
    t = started(SkmsgTransport(tmp_path / "next", make_table(1)))
    try:
        assert not stale.exists()
    finally:
        t.stop()
