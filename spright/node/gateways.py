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
from dataclasses import dataclass

import uvloop

from spright.data.config import Config
from spright.data.table import MAX_GATEWAYS, RouteTable
from spright.front import http
from spright.front.roles import Follower
from spright.host.pool import PoolHandle
from spright.host.procs import die_with_parent, name_process
from spright.node.assembly import NodeMemory
from spright.transport.base import Transport


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
    counters: str  # the counter table's shared-memory name
    config: Config
    port: int  # the node's HTTP port, already bound by gateway 0


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
        server, connections = await http.serve(gateway, config.host, spec.port, reuse_port=True)
        role.announce()
        await stop.wait()
        await http.drain(server, connections, gateway, config.drain_timeout)
    finally:
        gateway.close()
        with contextlib.suppress(Exception):
            await gateway.closed()
        memory.close()
