"""The data-plane contract, parts 5 and 6: restarts and a clean stop (see test_contract.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import stat
import threading
from pathlib import Path

from spright.data.descriptor import Descriptor
from spright.transport.base import Transport
from spright.transport.bpf import BPF_FS
from tests.kit.dataplane import SETTLE, Node, arrival, assert_streams, desc, make_table, received, started
from tests.kit.kernel import still_loaded


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
    (tmp_path / "warm-up").mkdir()  # what a data plane starts once per process (grpc's poller thread) is no leak
    warm_up = Node(started(transport_cls(tmp_path / "warm-up", make_table(1))))
    await warm_up.attach_all((0, 1))
    await warm_up.close()
    held_before, pins_before = own_handles(), pins(runtime_dir)
    node = Node(started(transport_cls(runtime_dir, make_table(3, chains=[(1, 2, 3)]))))
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
        await node.close()
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
        if any(ours.values()):  # skmsg's, freed by the kernel asynchronously once unreferenced
            left.update({f"loaded {kind}s": ids for kind, ids in still_loaded(ours).items()})
        return {what: found for what, found in left.items() if found}

    await arrival(lambda: not leftovers())
    assert leftovers() == {}
    node.transport.stop()  # ... and still nothing after a third
    assert leftovers() == {}

