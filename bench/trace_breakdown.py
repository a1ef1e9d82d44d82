"""Where the time of Online Boutique's product page goes, service by service, read from the
node's own traces (``bench.trace``'s second part).

A node traces every request (``--trace-sample 1``); the page is asked for one request at a
time (nothing queues behind another request, so each service's figures are its own cost), then
optionally under ``wrk -c8`` (what queueing adds). The traces come from the node's span rings
(``kept_traces``); a ring keeps its endpoint's last 4096 records and the frontend writes about a
dozen per page (its hop and its calls), so the rings are read every ``BATCH`` pages, and only
traces whose every record was still there are counted.

Per request and service, summed over that service's runs in the request (a page calls
productcatalog six times), then the median over requests:

- ``queue``: waited for a place before the handler started (``Span.queue_ns``);
- ``handler``: the handler's own time: its run (duration minus queue) less the time it spent
  waiting on its own ``ctx.call``s, which the callees' rows show (``handler_incl_calls``: the
  run with those waits, as the span has it);
- ``data_plane``: what getting there and back cost. For a call: the caller's call span minus the
  callee's run (the request's and the reply's way, and the caller's wake-up for it); for the
  chain's hop: its transit from the gateway (``transit``: the way there only, as recorded);
- the ``gateway`` row: the server span less the hop and its transit, i.e. the gateway's own work
  and the answer's way back, which the span tree does not separate.

The frontend sends most calls at once (``asyncio.gather``), so a page's parts add up to more
than its time, and a reply that waits while the frontend's loop handles another is counted in
that call's data plane.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot

from bench.load import run_wrk, write_script
from bench.procs import Server, free_ports
from spright.data.traces import Span, Trace
from spright.ops.nodes import choose_node
from spright.ops.traceview import kept_traces

ROOT = Path(__file__).resolve().parent.parent
APP = "apps.online_boutique:app"
PRODUCT = "/product/OLJCESPC7Z"
BATCH = 200  # pages between two reads of the rings: ~12 frontend records each, well inside 4096
WARM_UP = 50  # pages before any is counted: first calls, imports, template compiling
FIELDS = ("queue", "handler", "data_plane", "handler_incl_calls", "transit", "runs")
PARTS = {"queue": "queue wait", "handler": "handler (own)", "data_plane": "data plane"}  # the chart's segments
Row = dict[str, int]


def pages(host: str, port: int, count: int) -> list[float]:
    """``count`` product pages one after another on one keep-alive connection: the client's
    latency of each, µs. Fails on any answer but 200."""
    latencies = []
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        for _ in range(count):
            started = time.perf_counter_ns()
            connection.request("GET", PRODUCT)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {PRODUCT} answered {response.status}")
            latencies.append((time.perf_counter_ns() - started) / 1e3)
    finally:
        connection.close()
    return latencies


def whole(trace: Trace) -> bool:
    """Every record of the page was read: one hop, and each call has the callee's run under it
    (a ring overwritten before the read leaves holes that ``complete`` alone may not show)."""
    def served(span: Span) -> bool:
        return all((child.kind != "call" or bool(child.children)) and served(child) for child in span.children)

    hops = [child for child in trace.root.children if child.kind == "hop"]
    return trace.complete and len(hops) == 1 and served(trace.root)


def collect(pid: int, since_ns: int, into: dict[int, Trace]) -> None:
    """Add the node's whole traces of requests started at or after ``since_ns`` (the records'
    clock: CLOCK_MONOTONIC, as ``time.perf_counter_ns``); a trace read before stays as read."""
    for trace in kept_traces(choose_node(pid=pid).traces):
        if trace.root.start_ns >= since_ns and whole(trace):
            into.setdefault(trace.trace_id, trace)


def covered(spans: Iterable[Span], start: int, end: int) -> int:
    """Nanoseconds of [start, end) inside at least one of ``spans`` (concurrent calls overlap)."""
    total, reached = 0, start
    for span in sorted(spans, key=lambda s: s.start_ns):
        low, high = max(span.start_ns, reached), min(span.end_ns, end)
        if high > low:
            total += high - low
            reached = high
    return total


def per_service(trace: Trace) -> dict[str, Row]:
    """One page's figures per service, ns (see the module's docstring)."""
    rows: dict[str, Row] = {}

    def row(name: str) -> Row:
        return rows.setdefault(name, dict.fromkeys(FIELDS, 0))

    def charge(run: Span, data_plane: int, transit: int) -> None:
        queue = run.queue_ns or 0
        calls = [child for child in run.children if child.kind == "call"]
        figures = row(run.function)
        figures["queue"] += queue
        figures["handler_incl_calls"] += run.duration_ns - queue
        figures["handler"] += run.duration_ns - queue - covered(calls, run.start_ns + queue, run.end_ns)
        figures["data_plane"] += data_plane
        figures["transit"] += transit
        figures["runs"] += 1
        for call in calls:
            for served in call.children:
                charge(served, call.duration_ns - served.duration_ns, served.transit_ns or 0)

    root = trace.root
    hops = [child for child in root.children if child.kind == "hop"]
    row("gateway")["handler"] = root.duration_ns - sum(hop.duration_ns + (hop.transit_ns or 0) for hop in hops)
    for hop in hops:
        charge(hop, hop.transit_ns or 0, hop.transit_ns or 0)
    return rows


def summarize(traces: list[Trace]) -> dict[str, Any]:
    """Medians over the pages, µs: the page (the server span) and each service's figures (0 for
    a page that did not reach the service)."""
    if not traces:
        raise RuntimeError("no whole trace of the product page was read from the node's rings")
    pages_ = [per_service(trace) for trace in traces]
    names = list(dict.fromkeys(name for page in pages_ for name in page))

    def median(name: str, field: str) -> float:
        value = statistics.median(page.get(name, {}).get(field, 0) for page in pages_)
        return value if field == "runs" else round(value / 1e3, 1)

    return {"traces": len(traces),
            "page_us": round(statistics.median(t.root.duration_ns for t in traces) / 1e3, 1),
            "services": {name: {field: median(name, field) for field in FIELDS}
                         for name in names}}


def node(transport: str, workdir: Path) -> tuple[Server, int]:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "spright", "run", APP, "--port", str(port), "--transport", transport,
            "--trace-sample", "1"]
    server = Server(argv, [port], workdir / f"boutique-traced-{port}.log", ROOT)
    server.start()
    return server, port


def measure(transport: str, requests: int, loaded_s: float, workdir: Path,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """The breakdown one page at a time (``requests`` pages), and under ``wrk -c8`` for
    ``loaded_s`` seconds (0: not), on a fresh node that traces every request."""
    server, port = node(transport, workdir)
    assert server.process is not None
    try:
        out = {"app": APP, "path": PRODUCT, "transport": transport, "requests": requests,
               **serial(server.process.pid, port, requests)}
        log(f"breakdown: {out['serial']['traces']} whole traces of {requests} pages one at a time")
        if loaded_s > 0:
            out["loaded"] = loaded(server.process.pid, port, loaded_s, workdir)
    finally:
        stop = server.stop()
    return {**out, "stop": stop}


def serial(pid: int, port: int, requests: int) -> dict[str, Any]:
    """``requests`` pages one at a time after a warm-up, the rings read every ``BATCH``."""
    pages("127.0.0.1", port, WARM_UP)
    since = time.perf_counter_ns()
    traces: dict[int, Trace] = {}
    latencies: list[float] = []
    for start in range(0, requests, BATCH):
        latencies += pages("127.0.0.1", port, min(BATCH, requests - start))
        collect(pid, since, traces)
    return {"client_p50_us": round(statistics.median(latencies), 1), "serial": summarize(list(traces.values()))}


def loaded(pid: int, port: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """``wrk -c8`` for ``seconds``; the pages the rings still hold whole when it ends (the last
    few hundred)."""
    since = time.perf_counter_ns()
    load = run_wrk(f"http://127.0.0.1:{port}{PRODUCT}", write_script("GET", None, workdir), 8, seconds)
    traces: dict[int, Trace] = {}
    collect(pid, since, traces)
    return {"connections": 8, "rps": load.rps, "p50_us": load.p50_us, "p99_us": load.p99_us,
            "errors": sum(load.errors.values()), **summarize(list(traces.values()))}


def plot(breakdown: dict[str, Any], path: Path, date: str) -> None:
    """Horizontal stacked bars, one per service (in the order the page reaches them), segments
    queue / handler / data plane in µs; a panel per load."""
    panels = [(key, breakdown[key]) for key in ("serial", "loaded") if key in breakdown]
    figure, grid = pyplot.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for axes, (key, part) in zip(grid[0], panels, strict=True):
        names = list(part["services"])[::-1]  # the first reached on top
        left = [0.0] * len(names)
        for index, (field, label) in enumerate(PARTS.items()):
            values = [part["services"][name][field] for name in names]
            axes.barh(names, values, left=left, label=label, color=f"C{index}")
            left = [a + b for a, b in zip(left, values, strict=True)]
        for y, total in enumerate(left):
            axes.annotate(f"{total:,.0f}", (total, y), xytext=(3, 0), textcoords="offset points", va="center",
                          fontsize=7)
        load = "one request at a time" if key == "serial" else \
            f"wrk -c8, {part['rps']:,.0f} req/s, p99 {part['p99_us'] / 1e3:.1f} ms"
        axes.set(title=f"{load}: median page {part['page_us']:,.0f} µs ({part['traces']} traces)",
                 xlabel="µs per page (median)")
        axes.set_xlim(0, max(left, default=1) * 1.12)
        axes.title.set_fontsize(9)
        axes.grid(alpha=0.3, axis="x")
        axes.legend(fontsize=7, loc="lower right")
    figure.suptitle(f"Online Boutique GET /product/{{id}}, {date}: median page "
                    f"{breakdown['serial']['page_us']:,.0f} µs one at a time ({breakdown['transport']})")
    figure.text(0.01, 0.01, "calls run concurrently (gather): parts add up to more than the page. data plane: "
                "a call span minus the callee's run; the hop's transit. gateway: its own work + the answer's "
                "way back.", fontsize=6.5)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
