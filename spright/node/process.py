"""A worker process: the entry point the supervisor starts, hosting one or more functions.

Forked from the node's template (spright.node.template), the app already imported, or spawned,
importing it afresh; it attaches to the node's pool,
counter table and data plane from a picklable ``WorkerSpec``, runs until SIGTERM, then
lets handlers in flight finish and detaches. Before its first request it seals itself off
and drops to an unprivileged user (``WorkerSpec.user``: spright/host/sandbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import NamedTuple

import uvloop

from spright.data.table import RouteTable
from spright.host import sandbox
from spright.host.pool import PoolHandle
from spright.host.procs import die_with_parent, name_process
from spright.node.assembly import NodeMemory
from spright.node.loader import load_app
from spright.routing import REMOTE_PROCESS
from spright.transport.base import Transport
from spright.worker import peertls

log = logging.getLogger("spright.worker")


class WorkerKey(NamedTuple):
    """A worker process: which of the table's processes, and which instance of it."""

    process: str  # RouteTable.processes()
    instance: int  # 0: the first; each instance hosts the same functions, on endpoints of its own

    def __str__(self) -> str:
        return self.process if self.instance == 0 else f"{self.process}#{self.instance}"


@dataclass(frozen=True)
class WorkerSpec:
    app_ref: str
    process: str  # the worker process's name (RouteTable.processes())
    instance: int  # which instance of it (WorkerKey)
    table: RouteTable  # the node's, as the supervisor compiled it (instances included)
    pool: PoolHandle
    transport: Transport
    counters: str  # its own security domain's counter segment (the others' it is never told)
    drain_timeout: float  # how long handlers in flight may finish once told to stop
    tracked: bool = True  # False: started on its own, its resource tracker must not unlink the node's memory
    parent: int = 0  # the pid of the process that starts it (the supervisor, or the template): it dies with it
    # whom it runs as once sealed (Config.worker_user): "root" keeps root (said, as not recommended);
    # None: whoever started it (a pod's worker: its container's securityContext decides)
    user: str | None = None


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a worker process (forked from the template, or spawned)."""
    die_with_parent(spec.parent)
    sealable = sandbox.enter()  # first, while this process has a single thread
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s [{spec.process}] %(message)s")
    uvloop.run(serve_worker(spec, sealable))


async def serve_worker(spec: WorkerSpec, sealable: bool, gateway_gone: asyncio.Future[bytes] | None = None) -> None:
    """One Worker per function this process hosts, all on one loop, each its own endpoint;
    sealed off from other domains' memory (``sealable``) before it says READY. Serves until
    SIGTERM (or until ``gateway_gone``)."""
    app = load_app(spec.app_ref)
    key = WorkerKey(spec.process, spec.instance)
    name_process(f"worker {key} [{app.name}]")
    table = spec.table
    # its own domain's pool, counters and span rings, no other's
    memory = NodeMemory.attach(table, [spec.pool], {spec.pool.domain: spec.counters}, tracked=spec.tracked)
    spec.transport.instances.watch(memory.counters.in_flight)
    workers = memory.workers(app, [table.instance_endpoints(f)[spec.instance] for f in table.processes()[spec.process]])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if gateway_gone is not None:
        gateway_gone.add_done_callback(lambda _: stop.set())
    early = spec.transport.attach_unprivileged
    if early:
        lock_down(spec, sealable)
    for worker in workers:
        await worker.start(spec.transport, announce=False)
    if not early:
        lock_down(spec, sealable)
    for worker in workers:
        worker.announce()
    await stop.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(worker.drain() for worker in workers)), spec.drain_timeout)
    for worker in workers:
        worker.close()
    for worker in workers:
        await worker.closed()
    memory.close()


def lock_down(spec: WorkerSpec, sealable: bool) -> None:
    """Seal the worker off (``sealable``), then drop to its user, having opened first what it
    would otherwise open later and no longer could: the live instances' file (root's, 0600)
    and a handle on the runtime directory for its data plane's socket files (0700 above it
    and root's). Its pool, counters and span rings are mapped already, and its data plane
    attached unless ``attach_unprivileged``."""
    if sealable:
        try:
            sandbox.seal()
        except OSError as exc:
            log.warning("spright: worker %s is not sealed off from other domains' memory: %s", spec.process, exc)
    if spec.user is None:
        return
    if spec.user == "root":
        log.warning("spright: worker %s runs as root: a compromised handler is root on this host; "
                    "not recommended", spec.process)
        return
    with contextlib.suppress(FileNotFoundError):  # none yet: a node that is not the supervisor's
        spec.transport.instances.open()
    spec.transport.hold_directory()
    if spec.process == REMOTE_PROCESS and peertls.configured():  # the node's key: root's to read, loaded now
        peertls.client_context()
    sandbox.drop_to(spec.user)
    die_with_parent(spec.parent)  # again: the kernel forgets PR_SET_PDEATHSIG when the uid changes
