"""Runs a node: pool, transport, gateway and one worker process per function.

Traffic is accepted only once every worker has announced itself; a worker that dies is
restarted (its in-flight requests fail fast with 502); SIGINT/SIGTERM drain the node and
it exits leaving no process, socket file, /dev/shm segment or BPF object behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import uvloop

from spright.front.membership import State
from spright.front.server import drain, serve
from spright.host.instances import FILE_NAME as INSTANCES_FILE
from spright.host.nodefile import NAME as NODE_FILE
from spright.host.nodefile import (
    NODE_DIR_ENV,
    NodeFile,
    make_runtime_dir,
    runtime_base,
    sweep_dead_nodes,
)
from spright.host.procs import join_all, name_process
from spright.host.sandbox import worker_ids, workers_user
from spright.node import control, join
from spright.node.assembly import NodeMemory
from spright.node.gateways import FurtherGateways, GatewaySpec, default_count
from spright.node.loader import app_files, load_app
from spright.node.process import WorkerKey, WorkerSpec
from spright.node.revisions import Revisions
from spright.node.scaling import TICK, Autoscaling
from spright.node.template import Shape, Starts, WorkerProcess
from spright.node.watch import Watcher
from spright.transport import select_transport
from spright.worker.remote import node_tls

log = logging.getLogger("spright")
RETIRE_AFTER = 0.5  # seconds between an instance leaving the live set and its SIGTERM


class Supervisor:
    def __init__(self, app_ref: str, **options: Any) -> None:
        """``options``: Config fields that override the app's (host, port, transport...).
        With ``node_dir`` it serves as the gateway of a node whose workers start on their own
        (``spright gateway``, spright.node.join) and join through that directory."""
        self.app_ref = app_ref
        self.app = load_app(app_ref)
        self.config = self.app.config.replace(**options)
        self.config = self.config.replace(user=workers_user(self.config, app_files(self.app), runtime_base()))
        self.node_dir = Path(self.config.node_dir) if self.config.node_dir else None
        self.gateway_count = self.config.gateways or default_count()
        self.table = self.app.compile(dict(self.config.instances), self.gateway_count,
                                      default_timeout=self.config.default_timeout)
        self.tls = node_tls(self.app.functions, self.table, self.config)  # ValueError: why not to start
        self.processes: dict[WorkerKey, WorkerProcess] = {}
        self.starts = Starts(self.config.worker_start, app_ref)  # the first revision's
        self._starts: dict[WorkerKey, list[float]] = {}
        self.autoscaling = Autoscaling(self.app, self.table)
        self._stopping = False
        self._port: int | None = None  # the HTTP port, once serving (the node file is written from then on)
        self._reloading: asyncio.Future[dict[str, Any]] | None = None  # a reload SIGHUP asked for

    def run(self) -> None:
        uvloop.run(self.serve())

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        for leftover in sweep_dead_nodes():
            log.warning("spright: removed %s, left by a node that was killed", leftover)
        self.runtime_dir = self.node_dir or runtime_base() / str(os.getpid())
        make_runtime_dir(self.runtime_dir, None if self.node_dir else worker_ids(self.config.worker_user))
        # however the node ends, a failed start too (an unknown transport, a port in use), its
        # directory goes: the next node to start would take one left behind for a killed node's
        try:
            await self._serve(stop)
        finally:
            if self.node_dir is None:
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
            else:  # the directory is the pod's: only what would mislead a worker goes
                for name in (join.FILE_NAME, NODE_FILE, control.SOCKET_NAME, INSTANCES_FILE):
                    (self.runtime_dir / name).unlink(missing_ok=True)

    async def _serve(self, stop: asyncio.Event) -> None:
        """Start the node in its runtime directory, serve until ``stop``, drain, stop it."""
        loop = asyncio.get_running_loop()
        os.environ[NODE_DIR_ENV] = str(self.runtime_dir)  # workers inherit it: per-node scratch space
        transport, reason = select_transport(self.runtime_dir, self.table, self.config)
        if reason:
            log.warning("spright: %s", reason)
        if self.node_dir and not transport.joinable:
            raise RuntimeError(f"the {transport.name} data plane cannot hand its state to workers started on their "
                               "own: use skmsg or unix with --node-dir")
        self.transport = transport
        self.memory = memory = NodeMemory.create(self.table, self.config)
        self.pool, self.counters = memory.pools, memory.counters
        self.coordinator = memory.coordinator(transport, self._wake)
        self.members = self.coordinator.members
        # what a template imports besides the app, before the first forks (the data plane's
        # module, and the idna codec, which a worker's first socket imports)
        modules = ["spright.node.process", type(transport).__module__, "encodings.idna"]
        self.revisions = Revisions(self.table, Shape(tuple(self.config.instances), self.gateway_count,
                                                     self.config.default_timeout),
                                   modules, self.config.ready_timeout, self.starts,
                                   stateful={name for name, f in self.app.functions.items() if f.stateful},
                                   live=transport.instances, leave_timeout=RETIRE_AFTER + self.config.drain_timeout + 5)
        self.gateway = memory.gateway(self.config, self.coordinator, service=self.app.name, dataplane=transport.name)
        self.gateways = FurtherGateways(self._gateway_spec, self.coordinator.gateways_serving, self.table, self.config,
                                        lambda index: self.pool.sweep(set(), index), self._write_node_file)
        controls, watcher = None, Watcher(self)  # spright run --reload
        try:
            transport.start()
            await self.gateway.start(transport)
            controls = await control.serve(self.runtime_dir, self._control, self._left)
            if not await _unless_stopped(stop, self._start_workers()):
                return  # SIGTERM while waiting for the workers: the cleanup below, at once
            if self.autoscaling and self.node_dir is None:  # else workers are started by others
                loop.call_later(TICK, self._autoscale)
            server, connections = await serve(self.gateway, self.config.host, self.config.port,
                                                   reuse_port=self.gateway_count > 1, tls=self.tls)
            self._port = _port_of(server)
            await self.gateways.start()
            self._write_node_file()
            watcher.start()
            name_process(f"gateway [{self.app.name}] {self.config.host}:{self._port} ({transport.name})")
            log.warning(
                "spright: serving %r on %s://%s:%d (transport=%s, %d functions)",
                self.app.name, "https" if self.tls else "http", self.config.host, _port_of(server), transport.name,
                len(self.table.functions),
            )
            await stop.wait()
            log.warning("spright: draining")
            self.gateways.terminate()  # they drain too, meanwhile
            await drain(server, connections, self.gateway, self.config.drain_timeout)
            await self.gateways.join()
        finally:
            if controls is not None:
                controls.close()
            self._stopping = True
            await watcher.stop()
            self._stop_workers()
            self.revisions.close()
            self.gateway.close()
            await self.gateway.closed()
            transport.stop()
            self.memory.close()

    # -- workers ---------------------------------------------------------------------------
    async def _start_workers(self) -> None:
        table = self.table
        if self.node_dir is not None:  # they start on their own and join (spright worker)
            join.write(self.node_dir, join.JoinInfo(
                self.app_ref, list(self.config.instances), self.gateway_count, join.digest(table, self.config.pool),
                self.transport.name, self.transport.join_state(), join.handles(self.pool.handles),
                {str(d): name for d, name in self.counters.names.items()}, self.config.drain_timeout),
                self.config.workers_group)
        else:
            if self.starts.how == "fork":  # the template imports what a worker does, once
                report = await self.revisions.open_first()
                if "pid" not in report:
                    log.warning("spright: workers are spawned, not forked from a template: %s",
                                report.get("error") or report.get("unforkable") or "the template exited")
            for name, hosted in table.processes().items():
                for instance in range(table.functions[hosted[0] - 1].instances):
                    self.spawn(self.revisions.key(name, instance))
        await self.coordinator.wait_ready(self.config.ready_timeout)

    def _endpoints_of(self, key: WorkerKey) -> list[int]:
        """The endpoint of each function a worker process hosts."""
        return [self.table.instance_endpoints(f)[key.instance] for f in self.table.processes()[key.process]]

    def spawn(self, key: WorkerKey) -> None:
        """Start worker ``key`` on its revision's code."""
        domain = self.table.functions[self.table.processes()[key.process][0] - 1].domain
        revision = self.revisions.revision(key)
        spec = WorkerSpec(revision.app_ref, key.process, key.instance, self.table, self.pool.handle(domain),
                          self.transport, self.counters.names[domain], self.config.drain_timeout,
                          parent=revision.starts.parent(), user=self.config.worker_user)
        began = time.monotonic()
        process = revision.starts.start(spec, f"spright-{key}")
        self.processes[key] = process
        self._starts.setdefault(key, []).append(began)
        for endpoint in self._endpoints_of(key):
            self.members.starting(endpoint, began)
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, key, process)

    def _exited(self, key: WorkerKey, process: WorkerProcess) -> None:
        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join(0)
        if self._stopping or self.processes.get(key) is not process:
            return
        if State.GONE in [self.members.exited(endpoint) for endpoint in self._endpoints_of(key)]:
            del self.processes[key]  # scaled away, or an old revision's: it drained and left
            self.revisions.collect(self.processes)
            self._write_node_file()
            return
        log.error("spright: worker %s exited with code %s; restarting", key, process.exitcode)
        recent = [t for t in self._starts[key] if t > time.monotonic() - 10]
        self._starts[key] = recent
        delay = min(0.1 * 2 ** max(len(recent) - 1, 0), 5.0)  # back off when crash-looping
        asyncio.get_running_loop().call_later(delay, self._respawn, key)

    def _respawn(self, key: WorkerKey) -> None:
        if not self._stopping and key in self.processes:  # (not retired meanwhile)
            self.spawn(key)
            if self._port is not None:
                self._write_node_file()  # readers (spright stats, tests) see the new pid

    def _gateway_spec(self, index: int) -> GatewaySpec:
        assert self._port is not None
        return GatewaySpec(self.app.name, index, self.table, self.pool.handles, self.transport,
                           self.counters.names, self.config, self._port)

    # -- scaling ---------------------------------------------------------------------------
    def scale(self, name: str, count: int) -> None:
        """Run ``count`` instances of function ``name``, live: new ones join the function's live
        instances once they announce themselves; leaving ones leave it first, then drain."""
        if self.node_dir is not None:
            raise ValueError("this node's workers start on their own: run more or fewer `spright worker` instead")
        function = self.table.functions[self.table.function_id(name) - 1]
        most = self.table.max_instances(function.id)
        least = 0 if function.scales_to_zero else 1
        if not least <= count <= most:
            raise ValueError(f"function {name!r} may run {least}..{most} instances (max_instances), not {count}")
        if frozen := self.revisions.frozen(function.process):
            raise ValueError(f"{name!r} does not scale now: {frozen}")
        keys = [self.revisions.key(function.process, instance) for instance in range(most)]
        for key in keys[:count]:
            if self._retiring(key):
                raise ValueError(f"instance {key} of {name!r} is still draining; try again in a moment")
            if key not in self.processes:
                self.spawn(key)
        for key in keys[count:]:
            if key in self.processes and not self._retiring(key):
                self.retire(key)
        self._write_node_file()

    def _retiring(self, key: WorkerKey) -> bool:
        return self.members.state(self._endpoints_of(key)[0]) == State.RETIRING

    def running(self, process: str) -> list[WorkerKey]:
        return [key for key in self.processes if key.process == process and not self._retiring(key)]

    def alive(self) -> list[WorkerKey]:
        return list(self.processes)

    def retire(self, key: WorkerKey) -> None:
        """Out of the live instances now (no new work), stopped once what was already on its
        way has surely arrived; SIGTERM makes it finish what it holds, then exit. One that
        died and waits to be restarted is not."""
        if not self.processes[key].is_alive():
            del self.processes[key]
            return
        for endpoint in self._endpoints_of(key):
            self.members.retire(endpoint)
        asyncio.get_running_loop().call_later(RETIRE_AFTER, self.processes[key].terminate)

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request on the control socket (spright.node.control)."""
        if "join" in request:  # a worker started on its own; its connection's end says it is gone
            key = WorkerKey(str(request["join"]), int(request["instance"]))
            log.info("spright: worker %s joined (pid %s)", key, request.get("pid"))
            return {"joined": str(key)}
        if "reload" in request or "rollout" in request:
            if self.node_dir is not None:
                raise ValueError("this node's workers start on their own: roll out new code with Kubernetes "
                                 "(kubectl rollout restart)")
            try:
                return await self.revisions.handle(self, self.app_ref, request)
            finally:
                self._write_node_file()
        if "scale" not in request:
            raise ValueError(f"unknown request {request!r}; known: scale, reload, rollout, join")
        name, count = str(request["scale"]), int(request["instances"])
        function_id = self.table.function_id(name)
        # instances still draining from an earlier scale down leave first: their places are
        # the ones a scale up starts again
        async with asyncio.timeout(RETIRE_AFTER + self.config.drain_timeout + 5):
            while any(self.members.state(e) == State.RETIRING for e in self.table.instance_endpoints(function_id)):
                await asyncio.sleep(0.05)
        self.scale(name, count)
        async with asyncio.timeout(self.config.ready_timeout):  # the new ones serve
            while len(self.members.live(function_id)) < count:
                await asyncio.sleep(0.05)
        return {"instances": count}

    def _left(self, request: dict[str, Any]) -> None:
        """A joined worker's control connection ended: it died (its container restarts it)."""
        key = WorkerKey(str(request["join"]), int(request["instance"]))
        if self._stopping:
            return
        log.error("spright: worker %s left the node", key)
        for endpoint in self._endpoints_of(key):
            self.members.exited(endpoint)

    def _sighup(self) -> None:
        """SIGHUP: every function reloaded, as ``spright reload`` does (a refusal is logged)."""
        if self._port is None or self._stopping:
            return log.warning("spright: SIGHUP ignored: the node is not serving")
        self._reloading = asyncio.ensure_future(self._control({"reload": []}))
        self._reloading.add_done_callback(_log_refusal)

    def _autoscale(self) -> None:
        if self._stopping:
            return
        try:
            self.autoscaling.tick(self.counters.read(), self.members.live, self.coordinator.activator.waiting,
                                  self._scale_unless_draining)
        finally:
            asyncio.get_running_loop().call_later(TICK, self._autoscale)

    def _scale_unless_draining(self, name: str, count: int) -> None:
        process = self.table.functions[self.table.function_id(name) - 1].process
        if not self.members.endpoints(State.RETIRING) and not self.revisions.frozen(process):
            self.scale(name, count)

    def _wake(self, function_id: int) -> None:
        """The activator holds work for a function with no live instance: start one, unless
        one is starting already (or the last is still draining: the autoscaler's next tick
        starts one then, as it counts the held work as demand)."""
        function = self.table.functions[function_id - 1]
        if (self._stopping or not function.scales_to_zero or self.revisions.key(function.process, 0) in self.processes
                or self.revisions.frozen(function.process)):
            return
        self.scale(function.name, 1)
        self.autoscaling.activated(function.name, self.coordinator.activator.waiting(function_id))

    def _stop_workers(self) -> None:
        loop = asyncio.get_running_loop()
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                loop.remove_reader(process.sentinel)
            if process.is_alive():
                process.terminate()
        join_all(self.processes.values(), self.config.drain_timeout + 2)

    def _write_node_file(self) -> None:
        table = self.table
        assert self._port is not None
        NodeFile(
            pid=os.getpid(),
            app=self.app.name,
            app_ref=self.app_ref,
            host=self.config.host,
            port=self._port,
            transport=self.transport.name,
            transport_info=self.transport.node_info(),
            scaling=list(self.autoscaling.decisions),
            revisions=self.revisions.describe(),
            workers={**{(table.name_of(e) if key.instance == 0 else f"{table.name_of(e)}#{key.instance}"):
                        process.pid or 0 for key, process in self.processes.items() for e in self._endpoints_of(key)},
                     **self.gateways.pids()},
            gateways=list(table.gateways),
            shm=[*self.memory.segment_names(), *self.transport.shm_names()],  # every segment of ours in /dev/shm
            metrics=self.memory.counter_segment(),
            domains=list(table.domains),
            functions=table.describe_functions(),
            routes=table.describe(),  # for `spright routes --live` when the data plane cannot read it back
            traces=self.memory.trace_info(),
        ).write(self.runtime_dir)


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> bool:
    """``work``, unless ``stop`` is set first (then cancelled): whether it ran to its end."""
    running, stopping = asyncio.ensure_future(work), asyncio.ensure_future(stop.wait())
    await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not running.done():
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        return False
    running.result()  # its exception, if it failed
    return True


def _log_refusal(reload: asyncio.Future[dict[str, Any]]) -> None:
    if not reload.cancelled() and reload.exception() is not None:
        log.error("spright: reload refused: %s", reload.exception())


def _port_of(server: asyncio.AbstractServer) -> int:
    sockets = cast(asyncio.Server, server).sockets
    return int(sockets[0].getsockname()[1])
