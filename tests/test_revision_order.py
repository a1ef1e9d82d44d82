"""The order in which a reload moves live sets (spright.node.revisions with a real membership
and template, the worker processes stood in for): a stateful function's two revisions are never
live together."""

from __future__ import annotations

from pathlib import Path

from spright.data.table import RouteTable
from spright.front.membership import Membership
from spright.node.loader import load_app
from spright.node.process import WorkerKey
from spright.node.revisions import Revisions
from spright.node.template import Shape, Starts
from spright.transport.local import LocalTransport


class Supervised:
    """What revisions ask of the supervisor (``Workers``), without processes: a spawned
    worker announces itself at once, and each change of a live set is written down."""

    def __init__(self, members: Membership, table: RouteTable) -> None:
        self.members, self.table = members, table
        self.keys: set[WorkerKey] = set()
        self.seen: list[tuple[str, tuple[int, ...]]] = []  # (what happened, tally's live set after)

    def endpoints(self, key: WorkerKey) -> list[int]:
        return [self.table.instance_endpoints(f)[key.instance] for f in self.table.processes()[key.process]]

    def spawn(self, key: WorkerKey) -> None:
        self.keys.add(key)
        for endpoint in self.endpoints(key):
            self.members.starting(endpoint)
            self.members.announced(endpoint)
        self.seen.append((f"started {key}", self.members.live(self.table.function_id("tally"))))

    def retire(self, key: WorkerKey) -> None:
        for endpoint in self.endpoints(key):
            self.members.retire(endpoint)
        self.keys.discard(key)  # (gone at once)
        self.seen.append((f"retired {key}", self.members.live(self.table.function_id("tally"))))

    def running(self, process: str) -> list[WorkerKey]:
        return [key for key in self.keys if key.process == process]

    def alive(self) -> list[WorkerKey]:
        return list(self.keys)


class Quiet:
    def became_live(self, function_id: int) -> None: ...
    def died(self, endpoint: int, function_down: bool) -> None: ...
    def gone(self, endpoint: int) -> None: ...
    def back(self, function_id: int) -> None: ...


async def test_a_stateful_function_s_new_revision_is_live_only_once_the_old_one_left(tmp_path: Path) -> None:
    """tally keeps state in its process: its two revisions are never live together (a request
    would see one's state, the next the other's); target, stateless, overlaps its old one."""
    app = load_app("tests.apps.revised:app")
    table = app.compile()
    transport = LocalTransport(tmp_path, table)
    members = Membership(table, transport, Quiet())
    workers = Supervised(members, table)
    revisions = Revisions(table, Shape((), 1, app.config.default_timeout), [], 60,
                          Starts("fork", "tests.apps.revised:app"), stateful={"tally"}, live=transport.instances,
                          leave_timeout=5)
    try:
        for process, hosted in table.processes().items():
            for instance in range(table.functions[hosted[0] - 1].instances):
                workers.spawn(revisions.key(process, instance))
        tally = table.function_id("tally")
        old, new = table.slot_endpoints(tally, 0), table.slot_endpoints(tally, 1)
        assert members.live(tally) == old
        answer = await revisions.reload(workers, "tests.apps.revised:app", ["tally", "target"])
        assert answer["revision"] == 2
        assert ("started tally#1", old) in workers.seen, "held at ready while the old one serves"
        assert all(set(live) <= set(old) or set(live) <= set(new) for _, live in workers.seen), workers.seen
        assert members.live(tally) == new
        target = table.function_id("target")
        assert members.live(target) == table.slot_endpoints(target, 1)
    finally:
        revisions.close()
