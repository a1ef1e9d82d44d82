"""Revisions of a node's functions: zero-downtime reloads and canary rollouts.

Every function has two revision slots (``RouteTable.slot_endpoints``), each with endpoints of
its own: the serving revision's instances run in one, and a reload or a rollout starts the next
revision in the other, beside them. A **revision** is code: the app reference its workers load
(the node's, or a rollout's ``--module``) and the template they fork from
(spright.node.template), which imported that code when the revision began. Beginning one is
also the check that the code may replace the running one: the template must load it and
compile it to the node's routes and functions (a new route, chain, function or setting needs
a new node: the gateways, the data plane's maps and the pools are sized from them).

- **reload**: the new revision's instances start (as many as serve now), join the live sets
  once they said READY, and the old ones retire (no new work, then drained: what a handler
  began finishes on the code that began it). Refused, and the old ones serve on, when the new
  code does not load, compiles to another table, or its workers do not become ready.
- **rollout**: the new revision starts as a canary: the function's live set is split
  (spright.front.membership), ``share`` percent of its requests and calls to the canary;
  ``promote`` makes it the serving revision and retires the old one, ``rollback`` retires the
  canary. A stateful function, or one sharing its process, refuses a split.

The supervisor starts and retires the processes (``Workers``); the node's autoscaler leaves a
function alone while a revision of it is beginning or a canary runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from spright.data.table import RouteTable
from spright.front.membership import Membership
from spright.host.instances import LiveInstances
from spright.node.process import WorkerKey
from spright.node.template import Shape, Starts, shape_of

log = logging.getLogger("spright")


class Refused(ValueError):
    """A reload or rollout that did not happen: the serving revision serves on."""


@dataclass(eq=False)
class Revision:
    number: int  # 1 for the node's first code, then in the order they began
    app_ref: str  # what its workers load
    starts: Starts  # how its workers start (forked from its template, or spawned)


class Workers(Protocol):
    """What revisions need of the supervisor."""

    members: Membership

    def spawn(self, key: WorkerKey) -> None: ...
    def retire(self, key: WorkerKey) -> None: ...
    def running(self, process: str) -> list[WorkerKey]:
        """The process's instances that run and are not retiring."""
    def alive(self) -> Iterable[WorkerKey]:
        """Every worker process that has not exited (retiring ones too)."""


class Revisions:
    def __init__(self, table: RouteTable, shape: Shape, modules: list[str], ready_timeout: float,
                 first: Starts, stateful: set[str], live: LiveInstances, leave_timeout: float) -> None:
        """``modules``: what a template imports besides the app (spright.node.template);
        ``stateful``: the functions that keep state in their process (no split for them);
        ``live``: where each slot's revision number is published (for /metrics);
        ``leave_timeout``: the longest a retired worker takes to exit."""
        self.table, self._shape, self._modules, self._ready_timeout = table, shape, modules, ready_timeout
        self._stateful, self._live, self._leave_timeout = stateful, live, leave_timeout
        processes = table.processes()
        self._most = {process: table.max_instances(ids[0]) for process, ids in processes.items()}
        self._slot = dict.fromkeys(processes, 0)  # the serving revision's
        self._of: dict[tuple[str, int], Revision] = {}  # (process, slot) -> the revision it runs
        for process in processes:
            self._assign(process, 0, Revision(1, first.app_ref, first))
        self.canaries: dict[str, int] = {}  # process -> its canary's share, while a rollout runs
        self._busy: set[str] = set()  # processes a revision is beginning for
        self._numbers = 1
        self._how = first.how  # Config.worker_start
        self._templates = [first]  # every revision's, until collected

    async def open_first(self) -> dict[str, Any]:
        """The first revision's template (``fork``): its report (spright.node.template)."""
        return await self._templates[0].open(self._ready_timeout, self._modules, self._shape)

    # -- which revision a worker is ----------------------------------------------------------
    def key(self, process: str, instance: int) -> WorkerKey:
        """Instance ``instance`` (0, 1, ...) of the serving revision of ``process``."""
        return WorkerKey(process, self._slot[process] * self._most[process] + instance)

    def serving(self, key: WorkerKey) -> bool:
        """Whether ``key`` is in its process's serving slot (not a canary, not an old revision)."""
        return key.instance // self._most[key.process] == self._slot[key.process]

    def revision(self, key: WorkerKey) -> Revision:
        return self._of[(key.process, key.instance // self._most[key.process])]

    def frozen(self, process: str) -> str | None:
        """Why ``process`` may not scale now (a revision beginning, a canary), or None."""
        if process in self._busy:
            return f"a reload or rollout of {process!r} is under way"
        if process in self.canaries:
            return f"{process!r} runs a canary: promote it or roll it back first"
        return None

    def describe(self) -> dict[str, list[dict[str, Any]]]:
        """Per process, its revisions (for node.json and ``spright stats``)."""
        rows: dict[str, list[dict[str, Any]]] = {}
        for (process, slot), revision in sorted(self._of.items(), key=lambda item: item[1].number):
            role = ("serving" if slot == self._slot[process] else
                    "canary" if process in self.canaries else "retiring")
            rows.setdefault(process, []).append({
                "revision": revision.number, "app": revision.app_ref, "role": role, "slot": slot,
                "share": self.canaries.get(process, 0) if role == "canary" else None,
                "endpoints": {self.table.name_of(f): list(self.table.slot_endpoints(f, slot))
                              for f in self.table.processes()[process]}})
        return rows

    # -- reload and rollout ------------------------------------------------------------------
    async def handle(self, workers: Workers, app_ref: str, request: dict[str, Any]) -> dict[str, Any]:
        """A control request (spright.ops.changes): ``reload``, or ``rollout`` with ``traffic``
        (and ``module``: else ``app_ref``, the node's) or ``promote`` (false: roll back)."""
        if "reload" in request:
            return await self.reload(workers, app_ref, [str(name) for name in request["reload"]])
        if "promote" in request:
            return self.finish(workers, str(request["rollout"]), promote=bool(request["promote"]))
        return await self.rollout(workers, str(request.get("module") or app_ref), str(request["rollout"]),
                                  int(request["traffic"]))

    async def reload(self, workers: Workers, app_ref: str, names: Iterable[str]) -> dict[str, Any]:
        """New workers on the code as it is now for the processes hosting ``names`` (every
        function when empty), then the old ones retire."""
        processes = self._processes(names)
        for process in processes:
            if process in self.canaries:
                raise Refused(f"{process!r} runs a canary: promote it or roll it back before reloading it")
        revision, started = await self._begin(workers, app_ref, processes, canary=False)
        for process in processes:
            for key in workers.running(process):
                if not self.serving(key):
                    continue
                workers.retire(key)
            self._slot[process] = 1 - self._slot[process]
        # a stateful function's new instances were held at ready: admitted now that the old ones
        # left the live set (no request sees two revisions' state; what arrives between the two
        # waits at the activator)
        workers.members.release([e for key in started for e in self._endpoints(key)])
        self.collect(workers.alive())
        log.warning("spright: reloaded %s: revision %d serves", ", ".join(processes), revision.number)
        return {"reloaded": processes, "revision": revision.number, "instances": len(started)}

    async def rollout(self, workers: Workers, app_ref: str, name: str, share: int) -> dict[str, Any]:
        """A canary of ``name`` on ``app_ref``'s code, given ``share`` percent of its traffic;
        while one runs, its share changes."""
        function_id = self.table.function_id(name)
        process = self.table.functions[function_id - 1].process
        if not 0 <= share <= 100:
            raise Refused(f"--traffic must be 0..100 (percent), not {share}")
        if process in self.canaries:
            workers.members.split(function_id, self.table.slot_endpoints(function_id, 1 - self._slot[process]), share)
            self.canaries[process] = share
            return {"function": name, "share": share}
        if name in self._stateful:
            raise Refused(f"{name!r} is stateful (its state lives in its process): two revisions of it would each "
                          "see part of its requests; reload it instead")
        if len(self.table.processes()[process]) > 1:
            raise Refused(f"{name!r} shares process {process!r} with other functions: only a function alone in its "
                          "process can be split")
        revision, started = await self._begin(workers, app_ref, [process], canary=True, share=share)
        self.canaries[process] = share
        log.warning("spright: canary of %s on %s (revision %d) takes %d%%", name, app_ref, revision.number, share)
        return {"function": name, "revision": revision.number, "share": share, "instances": len(started)}

    def finish(self, workers: Workers, name: str, promote: bool) -> dict[str, Any]:
        """End ``name``'s rollout: the canary serves everything (``promote``), or leaves."""
        function_id = self.table.function_id(name)
        process = self.table.functions[function_id - 1].process
        if process not in self.canaries:
            raise Refused(f"{name!r} runs no canary (spright rollout {name} --module ... starts one)")
        canary_slot = 1 - self._slot[process]
        for key in workers.running(process):  # the ones leaving go first, then one group again
            if (key.instance // self._most[process] == canary_slot) != promote:
                workers.retire(key)
        workers.members.unsplit(function_id)
        del self.canaries[process]
        if promote:
            self._slot[process] = canary_slot
        self.collect(workers.alive())
        number = self._of[(process, self._slot[process])].number
        return {"function": name, "promoted" if promote else "rolled_back": True, "revision": number}

    def collect(self, alive: Iterable[WorkerKey]) -> None:
        """Forget the revisions no worker of ``alive`` runs and no slot serves or canaries, and
        stop their templates (their workers die with them, so only once none is left)."""
        running = {(key.process, key.instance // self._most[key.process]) for key in alive}
        for process, slot in list(self._of):
            current = slot == self._slot[process] or process in self.canaries or process in self._busy
            if not current and (process, slot) not in running:
                self._assign(process, slot, None)
        kept = [starts for starts in self._templates if any(r.starts is starts for r in self._of.values())]
        for starts in self._templates:
            if starts not in kept:
                starts.close()
        self._templates = kept

    def close(self) -> None:
        """Stop every template (the node stops)."""
        for starts in self._templates:
            starts.close()

    # -- internals -------------------------------------------------------------------------
    def _assign(self, process: str, slot: int, revision: Revision | None) -> None:
        if revision is None:
            del self._of[(process, slot)]
        else:
            self._of[(process, slot)] = revision
        for function_id in self.table.processes()[process]:
            self._live.set_revision(function_id, slot, revision.number if revision else 0)

    def _endpoints(self, key: WorkerKey) -> list[int]:
        """The endpoint of each function worker ``key`` hosts."""
        return [self.table.instance_endpoints(f)[key.instance] for f in self.table.processes()[key.process]]

    def _processes(self, names: Iterable[str]) -> list[str]:
        processes = []
        for name in names:
            process = self.table.functions[self.table.function_id(name) - 1].process
            if process not in processes:
                processes.append(process)
        return processes or list(self.table.processes())

    async def _begin(self, workers: Workers, app_ref: str, processes: list[str], *, canary: bool,
                     share: int = 0) -> tuple[Revision, list[WorkerKey]]:
        """Check ``app_ref``'s code, then start its workers in the slot not serving of each of
        ``processes`` (as many as serve now) and wait until they are ready. Refused, with
        nothing left of it, if any of that fails."""
        busy = [process for process in processes if process in self._busy]
        if busy:
            raise Refused(f"a reload or rollout of {', '.join(busy)} is under way")
        self._busy.update(processes)
        try:
            return await self._start(workers, app_ref, processes, canary, share)
        finally:
            self._busy.difference_update(processes)

    async def _start(self, workers: Workers, app_ref: str, processes: list[str], canary: bool,
                     share: int) -> tuple[Revision, list[WorkerKey]]:
        # the slot it starts in may still hold the workers of the revision before, draining
        try:
            async with asyncio.timeout(self._leave_timeout):
                while any(self._slot[key.process] != key.instance // self._most[key.process]
                          for key in workers.alive() if key.process in processes):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise Refused("the revision before is still leaving; try again in a moment") from None
        starts = Starts(self._how, app_ref)
        report = await starts.open(self._ready_timeout, self._modules, self._shape)
        if "error" in report:
            raise Refused(f"the new code does not load: {report['error']}")
        if report["shape"] != shape_of(self.table):
            starts.close()
            raise Refused(f"{app_ref} no longer compiles to the node's routes and functions "
                          f"({_difference(report['shape'], shape_of(self.table))}): a reload changes code, not the "
                          "route table; restart the node to change that")
        self._numbers += 1
        revision = Revision(self._numbers, app_ref, starts)
        self._templates.append(starts)
        started: list[WorkerKey] = []
        for process in processes:
            slot = 1 - self._slot[process]
            self._assign(process, slot, revision)
            count = len([key for key in workers.running(process) if self.serving(key)])
            if canary:
                function_id = self.table.processes()[process][0]
                workers.members.split(function_id, self.table.slot_endpoints(function_id, slot), share)
                count = max(count, 1)
            for instance in range(count):
                key = WorkerKey(process, slot * self._most[process] + instance)
                if not canary and self._stateful.intersection(map(self.table.name_of, self.table.processes()[process])):
                    workers.members.hold(self._endpoints(key))
                workers.spawn(key)
                started.append(key)
        endpoints = [e for key in started for e in self._endpoints(key)]
        try:
            await workers.members.wait_serving(endpoints, self._ready_timeout)
        except RuntimeError as exc:
            workers.members.held.difference_update(endpoints)  # retired below, never admitted
            for key in started:
                with contextlib.suppress(KeyError):
                    workers.retire(key)
            for process in processes:
                if canary:
                    workers.members.unsplit(self.table.processes()[process][0])
            raise Refused(f"the new revision's {exc}; the serving revision serves on") from None
        return revision, started


def _difference(new: list[Any], old: list[Any]) -> str:
    """The first thing that differs between two shapes (``shape_of``), in words."""
    new_routes = {(r["method"], r["path"]): r for r in new[0]}
    old_routes = {(r["method"], r["path"]): r for r in old[0]}
    for route in old_routes.keys() - new_routes.keys():
        return f"route {' '.join(route)} is gone"
    for route in new_routes.keys() - old_routes.keys():
        return f"route {' '.join(route)} is new"
    for route, row in old_routes.items():
        if new_routes[route] != row:
            return f"route {' '.join(route)} changed its chain or timeout"
    old_functions = {f["name"]: f for f in old[1]}
    for row in new[1]:
        if row["name"] not in old_functions:
            return f"function {row['name']!r} is new"
        if row != old_functions[row["name"]]:
            return f"function {row['name']!r} changed its settings"
    return "functions are gone"

