"""One assembly of a node's parts, used by every kind of node: ``spright run``'s supervisor, a
further gateway process, a worker process (spawned, or started on its own in pod mode) and
TestClient. A node-wide resource is added here, once, and every kind of node has it.

A node's memory is its payload pools (one per security domain), its counter table (a row per
endpoint, in a segment per security domain; the gateways' latency histograms in domain 0's)
and, when it traces, its span rings (one per endpoint, named after the counter table: whoever
finds one finds the other). The first process creates them; the others attach to them by name,
a worker to its own domain's only. On that memory stand the gateway and the workers.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spright.data.config import Config
from spright.data.table import RouteTable
from spright.data.traces import TraceNames
from spright.front.gateway import Gateway, Role
from spright.front.recorder import Export, Recorder
from spright.front.roles import Coordinator
from spright.host.counters import COLUMNS, ROW_WORDS, CounterTable, histogram_words, layout
from spright.host.nodefile import CounterSegment
from spright.host.pool import Pool, PoolHandle
from spright.host.pools import NodePool
from spright.host.spans import NodeSpans
from spright.routing import App
from spright.transport.base import Transport
from spright.worker.runtime import Worker


@dataclass
class NodeMemory:
    """The payload pools, the counter table and the span rings of one node, as this process sees them."""

    table: RouteTable
    pools: NodePool
    counters: CounterTable
    spans: NodeSpans | None = None  # None: the node does not trace

    @classmethod
    def create(cls, table: RouteTable, config: Config, *, shared: bool = True) -> NodeMemory:
        """The node's memory, made by its first process; ``shared=False``: private memory for
        a node living in one process (TestClient), laid out the same."""
        pools = NodePool.create(config.pool, (f.domain for f in table.functions))
        counters = CounterTable.create(layout(table), shared=shared, extra_words=histogram_words(table))
        spans = None
        if config.tracing:
            names = {domain: spans_name(name) for domain, name in counters.names.items()}
            spans = NodeSpans.create(counters.layout, shared=shared, names=names)
        return cls(table, pools, counters, spans)

    @classmethod
    def attach(cls, table: RouteTable, pools: Iterable[PoolHandle], counters: Mapping[int, str], *,
               tracked: bool = True) -> NodeMemory:
        """Another process's view of the node's memory: the pools ``pools`` names and the
        counter segments ``counters`` names (domain -> segment; a worker is handed its own
        domain's only, a further gateway every domain's). ``tracked``: see
        ``spright.host.pool.attach_segment``."""
        spans = None
        with contextlib.suppress(FileNotFoundError):  # none: the node does not trace
            spans = NodeSpans.attach(layout(table), {d: spans_name(name) for d, name in counters.items()},
                                     tracked=tracked)
        return cls(table, NodePool.attach(pools, tracked=tracked),
                   CounterTable.attach(layout(table), counters, tracked=tracked), spans)

    def coordinator(self, transport: Transport, wake: Callable[[int], None] = lambda function_id: None) -> Coordinator:
        """The first gateway's role: the node's membership and activator (spright.front.roles)."""
        return Coordinator(self.table, self.pools, transport, wake)

    def gateway(self, config: Config, role: Role, index: int = 0, *, service: str = "spright",
                dataplane: str = "") -> Gateway:
        """Gateway process ``index`` of the node, in ``role`` (the coordinator's for 0, else a
        ``Follower``); with its trace recorder when the node traces, exporting as ``service``
        (the app's name) over ``dataplane`` when ``config.otlp`` says where."""
        recorder = None
        if self.spans is not None:
            exporter: Export | None = None
            if config.otlp:  # imported only to export: OpenTelemetry's SDK takes ~0.1 s to import
                from spright.front.tracing import Exporter

                exporter = Exporter(config.otlp, service=service, attributes={
                    "spright.dataplane": dataplane, "spright.gateway": str(index), "host.name": socket.gethostname()})
            recorder = Recorder(self.table, config, self.spans, self.table.gateways[index], index, exporter)
        return Gateway(self.table, self.pools, config, role, self.counters, index, recorder)

    def workers(self, app: App, endpoints: Iterable[int]) -> list[Worker]:
        """A Worker for each endpoint (an instance of a function), over its domain's pool and
        its own row of counters."""
        table = self.table
        spans = self.spans
        return [Worker(table, app.functions[table.name_of(e)], self.pool_of(e), self.counters.row(e), e,
                       spans.writer(e) if spans is not None else None) for e in endpoints]

    def segment_names(self) -> list[str]:
        """Every /dev/shm segment of this node's memory."""
        spans = self.spans.names.values() if self.spans is not None else ()
        return [*self.pools.segment_names, *self.counters.names.values(), *spans]

    def counter_segment(self) -> CounterSegment:
        """Where a reader in another process finds every endpoint's counters (node.json's ``metrics``)."""
        return CounterSegment(self.counters.segments(), self.counters.rows, ROW_WORDS, list(COLUMNS))

    def trace_info(self) -> dict[str, Any]:
        """What a reader in another process needs of the span rings (node.json's ``traces``)."""
        if self.spans is None:
            return {}
        return {"segments": self.spans.segments(), "capacity": self.spans.capacity,
                "names": TraceNames.of(self.table).to_json()}

    def pool_of(self, endpoint: int) -> Pool:
        return self.pools.domain(self.table.functions[self.table.function_of(endpoint) - 1].domain)

    def close(self) -> None:
        if self.spans is not None:
            self.spans.close()
        self.counters.close()
        self.pools.close()


def spans_name(counters: str) -> str:
    """The span rings' segment, named after the counter table's (``spright-<hex>-metrics``)."""
    return counters.removesuffix("-metrics") + "-spans"
