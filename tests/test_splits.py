"""A weighted split of a function's live set (the primitive of a canary rollout): of its live
instances, a canary group gets ``share`` percent of the requests and calls, the stable group
the rest. ``LiveInstances`` on its own, membership's partition of the live set, then every
data plane (skmsg's kernel program included) carrying 10,000 descriptors through a split, on
its own and as a real node's calls."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from spright import App
from spright.data.descriptor import CALL, GATEWAY, REQUEST
from spright.data.table import RouteTable
from spright.front.membership import Membership
from spright.host.instances import LiveInstances
from spright.ops.nodes import choose_node, snapshot
from spright.testing import run_node
from spright.transport.base import Transport
from spright.transport.local import LocalTransport
from tests.apps.splits import app as splits_app
from tests.kit.dataplane import WAIT, Node, arrival, desc
from tests.kit.nodes import spright

PICKS = 10_000


def splittable() -> RouteTable:
    """Function ``f`` of up to four instances (two at the start), a lone ``solo`` beside it."""
    app = App("splits")
    app.add_function(lambda ctx: None, name="f", instances=2, max_instances=4)
    app.add_function(lambda ctx: None, name="solo")
    app.route("/f", "f")
    app.route("/solo", "solo")
    return app.compile()


@pytest.fixture
def live(tmp_path: Path) -> tuple[LiveInstances, int, tuple[int, ...]]:
    """A node's live sets (created as the first gateway does), f's id and its four endpoints."""
    table = splittable()
    instances = LiveInstances(tmp_path, table)
    instances.create()
    f = table.function_id("f")
    return instances, f, table.slot_endpoints(f, 0)


def picks(instances: LiveInstances, function_id: int, n: int = PICKS) -> collections.Counter[int]:
    return collections.Counter(instances.pick(function_id) for _ in range(n))


def test_a_tenth_of_the_picks_go_to_the_canary(live) -> None:
    instances, f, (a, b, c, _) = live
    instances.set(f, (a, b), (c,), 10)
    counts = picks(instances, f)
    assert 8 <= 100 * counts[c] / PICKS <= 12, counts
    assert counts[a] + counts[b] + counts[c] == PICKS and abs(counts[a] - counts[b]) <= 1, (
        f"round robin within the stable group: {counts}")


def test_round_robin_within_each_group(live) -> None:
    instances, f, (a, b, c, d) = live
    instances.set(f, (a,), (b, c, d), 50)
    order = [instances.pick(f) for _ in range(12)]
    assert order.count(a) == 6, order
    assert [e for e in order if e != a] == [b, c, d, b, c, d], "the canary's instances take turns"


@pytest.mark.parametrize("share", [0, 100])
def test_share_0_and_100_send_everything_to_one_group(live, share: int) -> None:
    instances, f, (a, b, c, d) = live
    instances.set(f, (a, b), (c, d), share)
    counts = picks(instances, f, 1000)
    group = (c, d) if share else (a, b)
    assert set(counts) == set(group) and counts[group[0]] == counts[group[1]] == 500, counts


def test_with_no_stable_instance_live_the_canary_gets_everything_not_the_activator(live) -> None:
    instances, f, (_, _, c, _) = live
    instances.set(f, (), (c,), 10)
    assert set(picks(instances, f, 100)) == {c}
    instances.set(f, (), ())
    assert instances.pick(f) == GATEWAY, "none live: the activator"


def test_get_is_the_whole_live_set_and_split_tells_the_groups_apart(live, tmp_path: Path) -> None:
    instances, f, (a, b, c, d) = live
    instances.set(f, (b, d), (a,), 25)
    reader = LiveInstances(tmp_path, splittable())  # as another process of the node maps the file
    assert reader.get(f) == (a, b, d)
    assert reader.split(f) == ((b, d), (a,), 25)
    instances.set(f, (a, b, c))
    assert reader.split(f) == ((a, b, c), (), 0) and reader.get(f) == (a, b, c)


def test_a_split_that_is_not_one_is_refused(live) -> None:
    instances, f, (a, b, c, d) = live
    for endpoints, canary, share in (((a,), (b,), 101), ((a, b), (b,), 10), ((a, b, c, d) * 3, (), 0)):
        with pytest.raises(ValueError, match="not a split"):
            instances.set(f, endpoints, canary, share)


class Quiet:
    """A membership listener that needs to hear nothing."""

    def became_live(self, function_id: int) -> None: ...

    def died(self, endpoint: int, function_down: bool) -> None: ...

    def gone(self, endpoint: int) -> None: ...

    def back(self, function_id: int) -> None: ...


def test_membership_keeps_the_split_as_instances_come_and_go(tmp_path: Path) -> None:
    table = splittable()
    members = Membership(table, LocalTransport(tmp_path, table), Quiet())
    reader = LiveInstances(tmp_path, table)
    f = table.function_id("f")
    a, b, c, d = table.slot_endpoints(f, 0)
    members.announced(a)
    members.split(f, (c, d), 20)
    assert reader.split(f) == ((a,), (), 0), "no canary live yet: one group"
    members.announced(c)
    members.announced(b)
    assert reader.split(f) == ((a, b), (c,), 20) and reader.get(f) == (a, b, c)
    members.retire(a)
    members.retire(b)
    assert reader.split(f) == ((), (c,), 20), "the stable group gone: the canary has it all"
    members.announced(d)
    members.unsplit(f)
    assert reader.split(f) == ((c, d), (), 0)
    with pytest.raises(ValueError, match="not a split of 'f'"):
        members.split(f, (table.function_id("solo"),), 10)


# -- every data plane -------------------------------------------------------------------------
@pytest.fixture
async def split_node(transport_cls: type[Transport], tmp_path: Path) -> AsyncIterator[tuple[Node, Membership]]:
    """A started data plane of the parametrized kind, its live sets written by a membership
    (as the first gateway's: the file exists before the data plane starts, skmsg copies it)."""
    table = splittable()
    transport = transport_cls(tmp_path, table)
    members = Membership(table, transport, Quiet())
    transport.start()
    node = Node(transport)
    try:
        yield node, members
    finally:
        await node.close()


async def test_every_data_plane_gives_the_canary_its_share(split_node) -> None:
    """The gateway sends 10,000 requests and calls to f, whose two instances are split 90/10:
    the canary receives 10 % ± 2 %, as its inbox and (skmsg) the kernel's counters say."""
    node, members = split_node
    f = members.table.function_id("f")
    stable, canary = members.table.instance_endpoints(f)[:2]
    peers = await node.attach_all((GATEWAY, stable, canary))
    for endpoint in (stable, canary):
        members.announced(endpoint)
    members.split(f, (canary,), 10)
    for start in range(0, PICKS, 100):
        peers[GATEWAY].send(desc(f, GATEWAY, seq, flags=(REQUEST, CALL)[seq % 2]) for seq in range(start, start + 100))
    got = lambda: len(peers[stable].inbox.items) + len(peers[canary].inbox.items)  # noqa: E731
    await arrival(lambda: got() >= PICKS, timeout=6 * WAIT)
    assert got() == PICKS and not peers[GATEWAY].inbox.items, "each went to one instance, none to the activator"
    assert 8 <= 100 * len(peers[canary].inbox.items) / PICKS <= 12, len(peers[canary].inbox.items)
    if (kernel := node.counters()) is not None:  # skmsg: the kernel's own count agrees
        assert {e: kernel[e].received for e in (stable, canary)} == {  # type: ignore[attr-defined]
            e: len(peers[e].inbox.items) for e in (stable, canary)}


# -- a real node ------------------------------------------------------------------------------
def instance_counts(port: int, function: str) -> dict[int, int]:
    """Descriptors each instance of ``function`` received so far, as ``spright stats`` reads them."""
    entry = next(f for f in snapshot(choose_node(port=port))["functions"] if f["name"] == function)
    return {i["endpoint"]: i["descriptors_in"] for i in entry["instances"]}


async def test_a_node_gives_the_canary_its_share_of_calls(transport: str, runtime_dir: Path) -> None:
    """``caller`` calls ``target`` 10,000 times while a canary of it (``spright rollout``) takes
    10 %: the counters of the canary's instances say they got 10 % ± 2 %."""
    table = splits_app.compile()
    target = table.function_id("target")
    stable, canary = table.slot_endpoints(target, 0), table.slot_endpoints(target, 1)
    with run_node("tests.apps.splits:app", transport=transport) as (port, _):
        rolled = spright("rollout", "target", "--traffic", "10", "--port", str(port))
        assert rolled.returncode == 0, rolled.stderr
        before = instance_counts(port, "target")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session, \
                session.post("/calls", data=str(PICKS)) as reply:
            assert reply.status == 200, await reply.text()
        after = instance_counts(port, "target")
    got = {group: sum(after.get(e, 0) - before.get(e, 0) for e in endpoints)
           for group, endpoints in (("stable", stable), ("canary", canary))}
    assert sum(got.values()) == PICKS and 8 <= 100 * got["canary"] / PICKS <= 12, got
