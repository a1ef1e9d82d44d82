"""The instance-membership state machine (spright.front.membership) over a real data plane's live
sets: what each event does to an instance's state, to its function's live set (the file every
userspace plane reads) and what the node is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from spright.front.membership import MOVES, Membership, State
from spright.host.instances import LiveInstances
from spright.transport.local import LocalTransport
from tests.apps.instances import app


class Told:
    """The listener: records what membership told the node, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, bool | None]] = []

    def became_live(self, function_id: int) -> None:
        self.events.append(("became_live", function_id, None))

    def died(self, endpoint: int, function_down: bool) -> None:
        self.events.append(("died", endpoint, function_down))

    def gone(self, endpoint: int) -> None:
        self.events.append(("gone", endpoint, None))

    def back(self, function_id: int) -> None:
        self.events.append(("back", function_id, None))


@pytest.fixture
def membership(tmp_path: Path) -> tuple[Membership, Told, LiveInstances, list[int]]:
    table = app.compile()
    told = Told()
    members = Membership(table, LocalTransport(tmp_path, table), told)
    reader = LiveInstances(tmp_path, table)  # as another process of the node maps the file
    return members, told, reader, list(table.instance_endpoints(table.function_id("who")))


def test_an_instance_goes_live_when_it_announces_itself_and_the_first_one_releases_the_activator(membership) -> None:
    members, told, reader, (first, second, *_) = membership
    who = members.table.function_id("who")
    assert reader.get(who) == () and members.state(first) == State.GONE  # nothing live before a READY
    members.starting(first)
    assert members.state(first) == State.STARTING and reader.get(who) == ()
    assert members.announced(first)
    assert members.state(first) == State.LIVE and reader.get(who) == (first,)
    assert members.announced(second)  # a worker started on its own: READY without a start
    assert reader.get(who) == (first, second) and members.serving(who) == 2
    assert told.events == [("became_live", who, None)]  # only when the set stops being empty


def test_a_retired_instance_leaves_the_live_set_at_once_and_is_gone_when_it_exits(membership) -> None:
    members, told, reader, (first, second, *_) = membership
    who = members.table.function_id("who")
    members.announced(first)
    members.announced(second)
    members.retire(second)
    assert members.state(second) == State.RETIRING and reader.get(who) == (first,)
    assert members.serving(who) == 2  # it still finishes what it holds
    assert members.exited(second) == State.GONE
    assert told.events[-1] == ("gone", second, None) and members.serving(who) == 1


def test_a_retired_instance_that_announces_itself_late_is_not_put_back_live(membership) -> None:
    """Scaled away while starting: its READY must not give it new work."""
    members, _, reader, (first, *_) = membership
    members.starting(first)
    members.retire(first)
    assert not members.announced(first)
    assert members.state(first) == State.RETIRING and reader.get(members.table.function_id("who")) == ()


def test_the_last_instance_dying_takes_its_function_down_until_one_is_ready_again(membership) -> None:
    members, told, reader, (first, second, *_) = membership
    who = members.table.function_id("who")
    members.announced(first)
    members.announced(second)
    assert members.exited(first) == State.DIED
    assert told.events[-1] == ("died", first, False) and who not in members.down  # the other serves
    assert reader.get(who) == (second,)
    members.exited(second)
    assert told.events[-1] == ("died", second, True) and who in members.down and reader.get(who) == ()
    members.starting(second)  # restarted
    assert who in members.down
    members.announced(second)
    assert who not in members.down
    assert told.events[-2:] == [("back", who, None), ("became_live", who, None)]


def test_a_single_instance_function_is_live_once_ready_and_goes_down_and_back(membership) -> None:
    """One instance per revision: its live set (where a reload's new revision joins it) is the
    one instance, ready; empty, and the function down, once it died."""
    members, told, reader, _ = membership
    cart = members.table.function_id("cart")
    endpoint, _spare = members.table.instance_endpoints(cart)
    assert reader.get(cart) == ()
    members.announced(endpoint)
    assert reader.get(cart) == (endpoint,) == (cart,) and members.serving(cart) == 1
    members.exited(endpoint)
    assert told.events[-1] == ("died", endpoint, True) and cart in members.down and reader.get(cart) == ()


def test_moves_the_machine_does_not_allow_are_ignored(membership) -> None:
    members, told, _, (first, *_) = membership
    members.retire(first)  # gone: nothing to retire
    assert members.state(first) == State.GONE
    assert members.exited(first) == State.GONE and told.events == []  # exiting twice is no news
    assert all(State.LIVE not in MOVES[state] for state in State if state != State.READY)  # only via ready


async def test_waiting_for_instances_names_those_that_did_not_announce_themselves(membership) -> None:
    members, _, _, (first, second, *_) = membership
    members.announced(first)
    with pytest.raises(RuntimeError, match=r"workers did not become ready within 0\.01s: who#1$"):
        await members.wait_serving([first, second], 0.01)
    members.announced(second)
    await members.wait_serving([first, second], 0.01)
