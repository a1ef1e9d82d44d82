"""The node's further gateway processes (``spright run --gateways N``).

One Python process parses HTTP at most as fast as one core allows. With N gateways, the
supervisor's own (index 0) and N-1 spawned ones all listen on the node's port with
SO_REUSEPORT, and the kernel spreads new connections over them. Each is an endpoint of the
data plane of its own, maps every domain's pool and hands out request ids that carry its index
(``descriptor.GATEWAY_SHIFT``), so the answer of a request's chain comes back to the process
that holds its client (the data plane routes RESPONSE and ERROR by that index). Workers
announce themselves to gateway 0, which tells the others when a function goes down or comes
back (``spright.front.roles``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.process import BaseProcess

import uvloop

from spright.data.config import Config
from spright.data.table import MAX_GATEWAYS, RouteTable
from spright.front.roles import Follower
from spright.front.server import drain, serve
from spright.host.pool import PoolHandle
from spright.host.procs import die_with_parent, join_all, name_process
from spright.node.assembly import NodeMemory
from spright.transport.base import Transport
from spright.worker.remote import server_tls


def default_count() -> int:
    """``--gateways`` left out: one on a machine of two cores or fewer (it would only take cores
    from the functions), else one per two cores."""
    cores = len(os.sched_getaffinity(0))
    return 1 if cores <= 2 else min(cores // 2, MAX_GATEWAYS)


@dataclass(frozen=True)
class GatewaySpec:
    app: str  # the app's name, for the process title
    index: int  # 1..N-1
    table: RouteTable
    pools: list[PoolHandle]  # every domain's
    transport: Transport
    counters: dict[int, str]  # every domain's counter segment (domain -> shared-memory name)
    config: Config
    port: int  # the node's HTTP port, already bound by gateway 0


log = logging.getLogger("spright")


class FurtherGateways:
    """The supervisor's further gateway processes: spawned once the node's port is bound, each
    restarted when it dies (once what its requests' chains may still write is over, ``grace``),
    drained with the node."""

    def __init__(self, spec: Callable[[int], GatewaySpec], serving: set[int], table: RouteTable, config: Config,
                 sweep: Callable[[int], object], changed: Callable[[], None]) -> None:
        """``spec``: the spec of gateway N; ``serving``: the endpoints of the gateways that said
        they serve (the first gateway's coordinator keeps it); ``sweep(index)``: frees the slots
        of a dead one's requests before it starts again; ``changed``: once it did."""
        self._spec, self._serving, self._table, self._config = spec, serving, table, config
        self._sweep, self._changed = sweep, changed
        self.processes: dict[int, BaseProcess] = {}  # by index, 1..N-1
        self._stopping = False

    async def start(self) -> None:
        """Spawn them all; return once every one said it serves."""
        for index in range(1, len(self._table.gateways)):
            self._spawn(index)
        async with asyncio.timeout(self._config.ready_timeout):
            while not self._serving.issuperset(self._table.gateways[1:]):
                await asyncio.sleep(0.02)

    def pids(self) -> dict[str, int]:
        return {f"gateway#{index}": process.pid or 0 for index, process in self.processes.items()}

    def terminate(self) -> None:
        """They drain (as the first gateway does meanwhile), and are not restarted."""
        self._stopping = True
        for process in self.processes.values():
            process.terminate()

    async def join(self) -> None:
        await asyncio.to_thread(join_all, list(self.processes.values()), self._config.drain_timeout + 2)

    def _spawn(self, index: int) -> None:
        process = get_context("spawn").Process(target=gateway_main, args=(self._spec(index),),
                                               name=f"spright-gateway-{index}", daemon=True)
        process.start()
        self.processes[index] = process
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, index, process)

    def _exited(self, index: int, process: BaseProcess) -> None:
        """Its clients lost their connections; it starts again after ``grace``."""
        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join(0)
        self._serving.discard(self._table.gateways[index])
        if self._stopping:
            return
        log.error("spright: gateway #%d exited with code %s; restarting in %g s", index, process.exitcode,
                  self._config.grace)
        asyncio.get_running_loop().call_later(self._config.grace, self._restart, index)

    def _restart(self, index: int) -> None:
        if not self._stopping:
            self._sweep(index)
            self._spawn(index)
            self._changed()


def gateway_main(spec: GatewaySpec) -> None:
    """Entry point of a spawned gateway process: serves until SIGTERM, then drains."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s [gateway#{spec.index}] %(message)s")
    uvloop.run(_serve(spec))


async def _serve(spec: GatewaySpec) -> None:
    config = spec.config
    name_process(f"gateway#{spec.index} [{spec.app}] {config.host}:{spec.port} ({spec.transport.name})")
    memory = NodeMemory.attach(spec.table, spec.pools, spec.counters)
    role = Follower(spec.table, spec.transport)
    gateway = memory.gateway(config, role, spec.index, service=spec.app, dataplane=spec.transport.name)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await gateway.start(spec.transport)
        server, connections = await serve(gateway, config.host, spec.port, reuse_port=True,
                                               tls=server_tls(config, spec.table))
        role.announce()
        await stop.wait()
        await drain(server, connections, gateway, config.drain_timeout)
    finally:
        gateway.close()
        with contextlib.suppress(Exception):
            await gateway.closed()
        memory.close()
