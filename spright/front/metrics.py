"""The gateway's metrics: its own counters and request latency histograms over the node's
counter table (spright.host.counters), and their Prometheus text for ``GET /metrics``.

The gateway is the one hot spot the node has, so its row is a plain list (a list item add
costs half a memoryview one) published into the table on every tick (Config.tick) and at close;
workers write the table directly. Latency histograms live only in the gateway process,
which serves them at ``/metrics``, and so do the histograms of traced requests' hops: how long
each function's runs waited for a place and how long its handler took (spright.front.recorder).
"""

from __future__ import annotations

import logging
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from time import monotonic
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from spright.data.response import Response
from spright.data.table import RouteEntry, RouteTable
from spright.data.traces import CALLED, HOP, Record, TraceNames
from spright.host.counters import (
    BUCKETS,
    ERRORS,
    FUNCTION_COLUMNS,
    HANDLED,
    HANDLER_NS,
    OUT,
    REFUSALS,
    REQUESTS,
    RESPONSES,
    ROW_WORDS,
    SLOTS,
    CounterTable,
    by_function,
)
from spright.host.pools import NodePool
from spright.transport.base import Transport

log = logging.getLogger("spright.front.gateway")
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """The gateway's counters and latency histograms; ``render`` is the ``/metrics`` body.

    Histograms are keyed by (route, status class): a route entry has one method and one
    path template, so the key is ``route index * 5 + class - 1``; ``observe`` is a bisect and
    two list adds, never a prometheus_client call. The response-class counters of
    routed requests are the histograms' counts, summed when read, not counted twice. Each
    gateway process publishes its histograms in the counter table's extra words (bucket
    counts, then sums in ns) once a tick; ``/metrics`` adds the other gateways' up.
    """

    def __init__(self, table: RouteTable, counters: CounterTable, instances: Callable[[int], int],
                 endpoint: int = 0, revisions: Callable[[], list[tuple[int, ...]]] | None = None) -> None:
        """``instances``: how many instances of a function id serve now; ``endpoint``: the
        gateway process's own, whose row it keeps; ``revisions``: per function, the revision
        each of its slots runs (``LiveInstances.revisions``), for the per-revision series."""
        self.table = table
        self.counters = counters
        self.instances = instances
        self.revisions = revisions
        self.endpoint = endpoint
        # the gateway's row (the owner bumps it in place), minus routed responses; see row()
        self.counts = [0] * ROW_WORDS
        self._route_key = {id(route): 5 * i for i, route in enumerate(table.routes)}
        keys = 5 * len(table.routes)
        self.buckets = [0] * (keys * SLOTS)  # per key: non-cumulative counts, +Inf last
        self.sums = [0.0] * keys
        self.refused = [0] * len(REFUSALS)  # requests and connections answered 503 at once, by REFUSALS
        self._sizes = (keys * SLOTS, keys * (SLOTS + 1))  # where a gateway's sums, then refusals, start
        self._block = keys * (SLOTS + 1) + len(REFUSALS)  # one gateway's words in the shared extra words
        self._index = table.gateways.index(endpoint) if endpoint in table.gateways else 0
        self._shared = len(counters.extra) >= len(table.gateways) * self._block
        # traced requests' hops and served calls, per function: queue wait, then handler time
        self.spans = {name: ([0] * SLOTS, [0] * SLOTS, [0.0, 0.0]) for name in (f.name for f in table.functions)}
        self._registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector(self)
        self._registry.register(self._collector)

    def observe(self, route: RouteEntry, status: int, started: float) -> None:
        """A routed request ended: its latency since submit, by route and status class."""
        seconds = monotonic() - started
        cls = status // 100
        key = self._route_key[id(route)] + (cls - 1 if 0 < cls < 6 else 4)
        self.buckets[key * SLOTS + bisect_left(BUCKETS, seconds)] += 1
        self.sums[key] += seconds

    def observe_runs(self, records: list[Record], names: TraceNames) -> None:
        """A traced request ended: each hop's and served call's queue wait and handler time."""
        for record in records:
            if record.kind in (HOP, CALLED) and (function := names.endpoint(record.endpoint)) in self.spans:
                waits, runs, sums = self.spans[function]
                queue, handler = (record.t1 - record.t0) / 1e9, (record.t2 - record.t1) / 1e9
                waits[bisect_left(BUCKETS, queue)] += 1
                runs[bisect_left(BUCKETS, handler)] += 1
                sums[0] += queue
                sums[1] += handler

    def answered(self, status: int) -> None:
        """A request answered without going down a chain (404, 405, refusals, /metrics)."""
        cls = status // 100
        self.counts[RESPONSES + (cls if 0 < cls < 6 else 5)] += 1

    def row(self) -> list[int]:
        """The gateway's counters now. Nothing counts requests on the hot path: each one is
        either sent down a chain (one descriptor out) or answered at once (counted by class)."""
        row = list(self.counts)
        row[REQUESTS] = row[OUT] + sum(row[RESPONSES + 1 : RESPONSES + 6])
        buckets = self.buckets
        for key in range(len(self.sums)):
            row[RESPONSES + 1 + key % 5] += sum(buckets[key * SLOTS : (key + 1) * SLOTS])
        return row

    def publish(self) -> None:
        """Copy the gateway's counters into its table row, for readers in other processes."""
        shared = self.counters.row(self.endpoint)
        for i, value in enumerate(self.row()):
            shared[i] = value
        if self._shared:
            start = self._index * self._block
            self.counters.extra[start : start + self._block] = array("Q", [*self.buckets,
                                                                           *(round(s * 1e9) for s in self.sums),
                                                                           *self.refused])

    def rows(self) -> list[list[int]]:
        """Every endpoint's counters, the gateway's live."""
        rows = self.counters.read()
        rows[self.endpoint] = self.row()
        return rows

    def histograms(self) -> Iterator[tuple[RouteEntry, str, list[int], float]]:
        """(route, status class, cumulative bucket counts incl. +Inf, sum) per observed key,
        over every gateway process (this one's live, the others' as last published)."""
        buckets, sums = list(self.buckets), list(self.sums)
        extra, (size, end) = self.counters.extra, self._sizes
        for start in self._others():
            buckets = [a + b for a, b in zip(buckets, extra[start : start + size], strict=True)]
            sums = [a + b / 1e9 for a, b in zip(sums, extra[start + size : start + end], strict=True)]
        for i, route in enumerate(self.table.routes):
            for cls in range(1, 6):
                key = 5 * i + cls - 1
                counts = buckets[key * SLOTS : (key + 1) * SLOTS]
                if any(counts):
                    running, cumulative = 0, []
                    for count in counts:
                        running += count
                        cumulative.append(running)
                    yield route, f"{cls}xx", cumulative, sums[key]

    def _others(self) -> list[int]:
        """Where each other gateway process's words start in the shared extra words."""
        if not self._shared:
            return []
        return [index * self._block for index in range(len(self.table.gateways)) if index != self._index]

    def refusals(self) -> list[int]:
        """Refusals by REFUSALS over every gateway process (the others' as last published)."""
        totals, offset = list(self.refused), self._sizes[1]
        for start in self._others():
            totals = [a + b for a, b in zip(totals, self.counters.extra[start + offset : start + self._block],
                                            strict=True)]
        return totals

    def page(self, transport: Transport | None, in_flight: int, pool: NodePool,
             totals: dict[str, tuple[str, float]] | None) -> Response:
        """The built-in ``GET /metrics``: Prometheus text of every endpoint's counters, the
        data plane's own counters (when it keeps any), pool and in-flight gauges, latency;
        ``totals``: the traced requests' (spright.front.recorder)."""
        kernel = None
        if transport is not None:
            try:  # a data plane that cannot be read right now must not cost the rest of the scrape
                kernel = type(transport).live_counters(transport.node_info())
            except Exception:
                log.exception("gateway: reading the data plane's counters failed")
        gauges = {
            "requests_in_flight": ("Requests submitted to a chain and not answered yet.", float(in_flight)),
            "pool_slots_in_use": ("Payload slots allocated in the shared-memory pool.", float(pool.in_use())),
            "pool_slots": ("Payload slots in the pool, all size classes.", float(pool.total)),
        }
        return Response(200, self.render(gauges, kernel, totals), [(b"content-type", CONTENT_TYPE)])

    def render(self, gauges: dict[str, tuple[str, float]], kernel: dict[int, dict[str, int]] | None,
               totals: dict[str, tuple[str, float]] | None = None) -> bytes:
        """Prometheus text; ``gauges``: name -> (help, value); ``kernel``: the data plane's
        own per-endpoint counters, when it keeps any; ``totals``: more counters, as gauges."""
        self._collector.gauges, self._collector.kernel, self._collector.totals = gauges, kernel, totals or {}
        try:
            return generate_latest(self._registry)
        finally:
            self._collector.gauges, self._collector.kernel, self._collector.totals = {}, None, {}


class _Collector(Collector):
    """Builds metric families from the live numbers at scrape time (nothing on the hot path)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.gauges: dict[str, tuple[str, float]] = {}
        self.kernel: dict[int, dict[str, int]] | None = None
        self.totals: dict[str, tuple[str, float]] = {}

    def _labels(self, endpoint: int) -> list[str]:
        table = self.metrics.table
        if endpoint == 0:
            return ["gateway", table.domains[0]]
        function = table.functions[endpoint - 1]
        return [function.name, table.domains[function.domain]]

    def collect(self) -> Iterator[Any]:
        metrics = self.metrics
        rows = by_function(metrics.table, metrics.rows())
        helps = {
            "descriptors_in": "Descriptors received by the endpoint.",
            "descriptors_out": "Descriptors sent by the endpoint.",
            "payload_bytes": "Payload bytes referenced by descriptors the endpoint received.",
            "handler_errors": "Handlers that raised (HTTPError included).",
            "calls": "Internal ctx.call()s made.",
            "handled": "Handler runs finished (requests and calls), errors included.",
            "handler_ns": "Wall time spent in handlers, awaits included.",
            "refused_calls": "ctx.call()s refused by the data plane: the callee is in another security domain.",
            "dropped_descriptors": "Descriptors no correct peer sends (slot, hop or kind out of range), dropped.",
        }
        for column, name in enumerate(FUNCTION_COLUMNS):
            scale = 1e-9 if name == "handler_ns" else 1  # Prometheus wants seconds
            family = CounterMetricFamily(f"spright_{name.replace('_ns', '_seconds')}", helps[name],
                                         labels=["function", "domain"])
            for endpoint, row in enumerate(rows):
                family.add_metric(self._labels(endpoint), row[column] * scale)
            yield family
        yield CounterMetricFamily("spright_requests", "HTTP requests received by the gateway.", value=rows[0][REQUESTS])
        responses = CounterMetricFamily("spright_responses", "HTTP responses by status class.", labels=["status"])
        for cls in range(1, 6):
            responses.add_metric([f"{cls}xx"], rows[0][RESPONSES + cls])
        yield responses
        refused = CounterMetricFamily("spright_requests_refused", "Requests answered 503 at once, before any "
                                      "chain: past Config.max_in_flight requests in flight (in_flight), or "
                                      "connections past Config.max_connections (connections).", labels=["reason"])
        for reason, count in zip(REFUSALS, metrics.refusals(), strict=True):
            refused.add_metric([reason], count)
        yield refused
        if self.kernel:
            yield from self._kernel_families(self.kernel)
        instances = GaugeMetricFamily("spright_instances", "Worker processes (instances) serving each function.",
                                      labels=["function", "domain"])
        for f in metrics.table.functions:
            instances.add_metric(self._labels(f.id), metrics.instances(f.id))
        yield instances
        for name, (text, value) in self.gauges.items():
            yield GaugeMetricFamily(f"spright_{name}", text, value=value)
        for name, (text, value) in self.totals.items():
            yield CounterMetricFamily(f"spright_{name}", text, value=value)
        latency = HistogramMetricFamily(
            "spright_request_duration_seconds",
            "Gateway time from submitting a request to its chain until its response.",
            labels=["method", "route", "status"],
        )
        bounds = [*(repr(b) for b in BUCKETS), "+Inf"]
        for route, status, cumulative, total in metrics.histograms():
            latency.add_metric([route.method, route.path, status], list(zip(bounds, cumulative, strict=True)), total)
        yield latency
        yield from self._span_families(bounds)
        if metrics.revisions is not None:
            yield from self._revision_families(metrics.revisions(), metrics.rows())

    def _revision_families(self, numbers: list[tuple[int, ...]], rows: list[list[int]]) -> Iterator[Any]:
        """Each function's handler runs, errors and time per revision, side by side while a
        canary runs (spright.node.revisions): the instances of a revision slot added up."""
        table = self.metrics.table
        families = [(column, scale, CounterMetricFamily(f"spright_revision_{name}", text,
                                                        labels=["function", "domain", "revision"]))
                    for column, scale, name, text in (
                        (HANDLED, 1, "handled", "Handler runs finished, per revision of the function."),
                        (ERRORS, 1, "handler_errors", "Handlers that raised, per revision of the function."),
                        (HANDLER_NS, 1e-9, "handler_seconds", "Wall time in handlers, per revision of the function."))]
        for f in table.functions:
            for slot, number in enumerate(numbers[f.id - 1]):
                if number:
                    endpoints = table.slot_endpoints(f.id, slot)
                    for column, scale, family in families:
                        family.add_metric([*self._labels(f.id), str(number)],
                                          sum(rows[e][column] for e in endpoints) * scale)
        for _, _, family in families:
            yield family

    def _span_families(self, bounds: list[str]) -> Iterator[Any]:
        """Queue wait and handler time per function, from the traces this gateway assembled."""
        table = self.metrics.table
        waits = HistogramMetricFamily("spright_queue_wait_seconds", "Traced runs of a function: time waiting "
                                      "for a place, from the descriptor's arrival to the handler's start.",
                                      labels=["function", "domain"])
        runs = HistogramMetricFamily("spright_handler_run_seconds", "Traced runs of a function: the handler's "
                                     "time, from its start until its answer left.", labels=["function", "domain"])
        for f in table.functions:
            wait_counts, run_counts, sums = self.metrics.spans[f.name]
            if any(wait_counts):
                labels = self._labels(f.id)
                waits.add_metric(labels, list(zip(bounds, accumulate(wait_counts), strict=True)), sums[0])
                runs.add_metric(labels, list(zip(bounds, accumulate(run_counts), strict=True)), sums[1])
        yield waits
        yield runs

    def _kernel_families(self, kernel: dict[int, dict[str, int]]) -> Iterator[Any]:
        """One family per key the data plane reports (whatever it keeps, e.g. drops)."""
        table = self.metrics.table
        keys = sorted({key for counters in kernel.values() for key in counters})
        summed: dict[int, dict[str, int]] = {}  # per function, its instances' counters added up
        for endpoint, counters in kernel.items():
            if endpoint == 0 or endpoint in table.endpoints:
                into = summed.setdefault(table.function_of(endpoint), {})
                for key, value in counters.items():
                    into[key] = into.get(key, 0) + value
        for key in keys:
            name = "spright_kernel_" + re.sub(r"[^A-Za-z0-9_]", "_", key)
            text = f"Data-plane counter {key!r}, kept by the transport itself."
            family = CounterMetricFamily(name, text, labels=["function", "domain"])
            for function_id in sorted(summed):
                if key in summed[function_id]:
                    family.add_metric(self._labels(function_id), summed[function_id][key])
            yield family
