"""Runs a node: pool, transport, gateway and one worker process per function.

Traffic is accepted only once every worker has announced itself; a worker that dies is
restarted (its in-flight requests fail fast with 502); SIGINT/SIGTERM drain the node and
it exits leaving no process, socket file, /dev/shm segment or BPF object behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import orjson
import uvloop

from spright import http
from spright.gateway import Gateway
from spright.loader import load_app
from spright.metrics import COLUMNS, ROW_WORDS, CounterTable
from spright.pool import Pool, PoolHandle
from spright.runtime import Worker
from spright.transport import select_transport
from spright.transport.base import Transport

log = logging.getLogger("spright")
NODE_DIR_ENV = "SPRIGHT_NODE_DIR"  # a worker's node runtime directory (removed when the node stops)


@dataclass(frozen=True)
class WorkerSpec:
    app_ref: str
    process: str  # the worker process's name (RouteTable.processes())
    pool: PoolHandle
    transport: Transport
    counters: str  # the counter table's shared-memory name


def runtime_base() -> Path:
    """Where nodes keep their runtime directory (``<base>/<pid>/node.json``); the CLI scans it.

    ``SPRIGHT_RUNTIME_DIR`` overrides it: separate groups of nodes (tests, users) can each
    keep their own.
    """
    if os.environ.get("SPRIGHT_RUNTIME_DIR"):
        return Path(os.environ["SPRIGHT_RUNTIME_DIR"])
    if os.geteuid() == 0:
        return Path("/run/spright")
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"spright-{os.getuid()}"


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a worker process (spawned, so it imports the app afresh)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s [{spec.process}] %(message)s")
    uvloop.run(_worker(spec))


async def _worker(spec: WorkerSpec) -> None:
    """One Worker per function this process hosts, all on one loop, each its own endpoint."""
    app = load_app(spec.app_ref)
    pool = Pool.attach(spec.pool)
    table = app.compile()
    counters = CounterTable.attach(spec.counters, len(table.endpoints))
    workers = [
        Worker(table, app.functions[table.name_of(i)], pool, counters.row(i)) for i in table.processes()[spec.process]
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    for worker in workers:
        await worker.start(spec.transport)
    await stop.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(worker.drain() for worker in workers)), app.config.drain_timeout)
    for worker in workers:
        worker.close()
    counters.close()
    pool.close()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed supervisor must not leave orphan workers."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Supervisor:
    def __init__(self, app_ref: str, **options: Any) -> None:
        """``options``: Config fields that override the app's (host, port, transport...)."""
        self.app_ref = app_ref
        self.app = load_app(app_ref)
        self.table = self.app.compile()
        self.config = self.app.config.replace(**options)
        self.processes: dict[str, BaseProcess] = {}  # by worker process name
        self._starts: dict[str, list[float]] = {}
        self._stopping = False

    def run(self) -> None:
        uvloop.run(self.serve())

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        self.runtime_dir = runtime_base() / str(os.getpid())
        self.runtime_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.environ[NODE_DIR_ENV] = str(self.runtime_dir)  # workers inherit it: per-node scratch space
        transport, reason = select_transport(self.config.transport, self.runtime_dir, self.table)
        if reason:
            log.warning("spright: %s", reason)
        self.transport = transport
        self.pool = Pool.create(self.config.pool)
        self.counters = CounterTable.create(len(self.table.endpoints))
        self.gateway = Gateway(self.table, self.pool, self.config, self.counters)
        server = None
        try:
            transport.start()
            await self.gateway.start(transport)
            await self._start_workers()
            server, connections = await http.serve(self.gateway, self.config.host, self.config.port)
            self._write_node_file(server)
            log.warning(
                "spright: serving %r on http://%s:%d (transport=%s, %d functions)",
                self.app.name, self.config.host, server.sockets[0].getsockname()[1], transport.name,
                len(self.table.functions),
            )
            await stop.wait()
            log.warning("spright: draining")
            await http.drain(server, connections, self.config.drain_timeout)
        finally:
            self._stopping = True
            self._stop_workers()
            self.gateway.close()
            transport.stop()
            self.pool.close()
            self.counters.close()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # -- workers ---------------------------------------------------------------------------
    async def _start_workers(self) -> None:
        for process in self.table.processes():
            self._spawn(process)
        await self.gateway.wait_ready(self.config.ready_timeout)

    def _spawn(self, name: str) -> None:
        spec = WorkerSpec(self.app_ref, name, self.pool.handle, self.transport, self.counters.name or "")
        process = get_context("spawn").Process(target=worker_main, args=(spec,), name=f"spright-{name}", daemon=True)
        process.start()
        self.processes[name] = process
        self._starts.setdefault(name, []).append(time.monotonic())
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, name, process)

    def _exited(self, name: str, process: BaseProcess) -> None:
        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join(0)
        if self._stopping or self.processes.get(name) is not process:
            return
        log.error("spright: worker %r exited with code %s; restarting", name, process.exitcode)
        for function_id in self.table.processes()[name]:
            self.gateway.function_died(function_id)
        recent = [t for t in self._starts[name] if t > time.monotonic() - 10]
        self._starts[name] = recent
        delay = min(0.1 * 2 ** max(len(recent) - 1, 0), 5.0)  # back off when crash-looping
        asyncio.get_running_loop().call_later(delay, self._respawn, name)

    def _respawn(self, name: str) -> None:
        if not self._stopping:
            self._spawn(name)

    def _stop_workers(self) -> None:
        loop = asyncio.get_running_loop()
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                loop.remove_reader(process.sentinel)
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + self.config.drain_timeout + 2
        for process in self.processes.values():
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                process.kill()
                process.join(1)

    def _write_node_file(self, server: asyncio.AbstractServer) -> None:
        port = server.sockets[0].getsockname()[1]
        info = {
            "pid": os.getpid(),
            "app": self.app.name,
            "app_ref": self.app_ref,
            "host": self.config.host,
            "port": port,
            "transport": self.transport.name,
            "transport_info": self.transport.node_info(),
            "workers": {self.table.name_of(i): self.processes[name].pid
                        for name, ids in self.table.processes().items() for i in ids},
            "shm": [*self.pool.segment_names, self.counters.name],  # every segment of ours in /dev/shm
            "metrics": {"shm": self.counters.name, "rows": self.counters.rows, "row_words": ROW_WORDS,
                        "columns": list(COLUMNS)},
            # the compiled table, for `spright routes --live` when the data plane cannot read it back
            "domains": list(self.table.domains),
            "functions": self.table.describe_functions(),
            "routes": self.table.describe(),
        }
        (self.runtime_dir / "node.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
