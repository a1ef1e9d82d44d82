"""One assembly of a node's parts, used by every kind of node: ``spright run``'s supervisor, a
further gateway process, a worker process (spawned, or started on its own in pod mode) and
TestClient. A node-wide resource is added here, once, and every kind of node has it.

A node's memory is its payload pools (one per security domain) and its counter table (a row per
endpoint, then the gateways' latency histograms). The first process creates both; the others
attach to them by name. On that memory stand the gateway and the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from spright.data.config import Config
from spright.data.table import RouteTable
from spright.front.gateway import Gateway, Role
from spright.front.roles import Coordinator
from spright.host.counters import CounterTable, histogram_words
from spright.host.pool import Pool, PoolHandle
from spright.host.pools import NodePool
from spright.routing import App
from spright.transport.base import Transport
from spright.worker.runtime import Worker


@dataclass
class NodeMemory:
    """The payload pools and the counter table of one node, as this process sees them."""

    table: RouteTable
    pools: NodePool
    counters: CounterTable

    @classmethod
    def create(cls, table: RouteTable, config: Config, *, shared: bool = True) -> NodeMemory:
        """The node's memory, made by its first process; ``shared=False``: private memory for
        a node living in one process (TestClient), laid out the same."""
        pools = NodePool.create(config.pool, (f.domain for f in table.functions))
        counters = CounterTable.create(len(table.endpoints), shared=shared, extra_words=histogram_words(table))
        return cls(table, pools, counters)

    @classmethod
    def attach(cls, table: RouteTable, pools: Iterable[PoolHandle], counters: str, *,
               tracked: bool = True) -> NodeMemory:
        """Another process's view of the node's memory: the pools ``pools`` names (a worker is
        handed its own domain's only) and the counter table named ``counters``. ``tracked``:
        see ``spright.host.pool.attach_segment``."""
        return cls(table, NodePool.attach(pools, tracked=tracked),
                   CounterTable.attach(counters, len(table.endpoints), tracked=tracked))

    def coordinator(self, transport: Transport, wake: Callable[[int], None] = lambda function_id: None) -> Coordinator:
        """The first gateway's role: the node's membership and activator (spright.front.roles)."""
        return Coordinator(self.table, self.pools, transport, wake)

    def gateway(self, config: Config, role: Role, index: int = 0) -> Gateway:
        """Gateway process ``index`` of the node, in ``role`` (the coordinator's for 0, else a
        ``Follower``)."""
        return Gateway(self.table, self.pools, config, role, self.counters, index)

    def workers(self, app: App, endpoints: Iterable[int]) -> list[Worker]:
        """A Worker for each endpoint (an instance of a function), over its domain's pool and
        its own row of counters."""
        table = self.table
        return [Worker(table, app.functions[table.name_of(e)], self.pool_of(e), self.counters.row(e), e)
                for e in endpoints]

    def pool_of(self, endpoint: int) -> Pool:
        return self.pools.domain(self.table.functions[self.table.function_of(endpoint) - 1].domain)

    def close(self) -> None:
        self.counters.close()
        self.pools.close()
