"""What ``spright trace`` prints: one request's spans as a waterfall, and a list of requests.

The waterfall is the view every tracing UI has (Jaeger, Zipkin, the browser's network panel):
a row per span, nested under its parent, and a bar placed on one time axis, that of the whole
request, so where the time went is seen before any number is read. Siblings are drawn in the
order they started, whatever order the tree keeps them in.

Times are CLOCK_MONOTONIC (spright.data.traces): only differences are shown, never a clock time,
so a trace read on another machine than the node's means the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from spright.data.traces import KEPT, SERVER, Record, Span, Trace, TraceNames, assemble
from spright.host.spans import open_segments

BAR = "━"
KIND_STYLES = {"server": "bold blue", "hop": "cyan", "call": "magenta", "handler": "green"}


def duration(ns: int) -> str:
    """Three or four significant digits in the unit that fits: 850.0 µs, 12.35 ms, 2.00 s."""
    if abs(ns) < 999_950:  # would round to 1000.0 µs: shown as 1.00 ms
        return f"{ns / 1e3:.1f} µs"
    if abs(ns) < 999_995_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def waterfall(trace: Trace, width: int = 60) -> RenderableType:
    """The trace's header line, then one row per span (depth first, indented by depth) with its
    start from the request's start, duration, queue wait, status and a bar ``width``
    characters wide, and a note when records were lost."""
    root = trace.root
    header = Text.assemble(("trace ", "dim"), (f"{trace.trace_id:032x}", "bold"), "  ", (trace.route, "bold"),
                           "  ", duration(root.duration_ns), ("  request ", "dim"), str(trace.request_id))
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    grid.add_column("span", no_wrap=True)
    for column in ("start", "duration", "queue", "status"):
        grid.add_column(column, justify="right", no_wrap=True)
    grid.add_column("timeline", no_wrap=True, width=width, min_width=width)
    for depth, span in _depth_first(root):
        grid.add_row(Text("  " * depth + span.name, style=KIND_STYLES.get(span.kind, "")),
                     duration(span.start_ns - root.start_ns), duration(span.duration_ns),
                     "-" if span.queue_ns is None else duration(span.queue_ns),
                     _status(span.status), bar(span, root, width))
    if trace.complete:
        return Group(header, grid)
    note = Text("incomplete: some of this request's records were overwritten before they were read; "
                "spans are missing", style="yellow")
    return Group(header, grid, note)


def bar(span: Span, root: Span, width: int) -> Text:
    """``width`` characters: the span's part of the request's time drawn as ``━``. Its first
    character is the column its start falls in; it covers at least one character, so a span too
    short for a column is still seen (and one outside the request is kept at its edge)."""
    scale = width / max(root.duration_ns, 1)
    begin = min(max(round((span.start_ns - root.start_ns) * scale), 0), width - 1)
    end = min(max(round((span.end_ns - root.start_ns) * scale), begin + 1), width)
    style = "red" if span.status >= 500 else KIND_STYLES.get(span.kind, "")
    return Text.assemble(" " * begin, (BAR * (end - begin), style), " " * (width - end))


def summary_table(traces: list[Trace]) -> Table:
    """One row per trace, in the order given: short trace id, route, status, total time, chain
    hops, and when it started after the earliest of them (``*``: records were lost)."""
    grid = Table(title=f"{len(traces)} traces", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    grid.add_column("trace", no_wrap=True)
    grid.add_column("route", no_wrap=True)
    for column in ("status", "total", "hops", "start"):
        grid.add_column(column, justify="right", no_wrap=True)
    first = min((trace.root.start_ns for trace in traces), default=0)
    for trace in traces:
        hops = sum(1 for child in trace.root.children if child.kind == "hop")
        grid.add_row(f"{trace.trace_id:032x}"[:8] + ("" if trace.complete else " *"), trace.route,
                     _status(trace.root.status), duration(trace.root.duration_ns), str(hops),
                     "+" + duration(trace.root.start_ns - first))
    if not all(trace.complete for trace in traces):
        grid.caption = "*: incomplete (records were lost)"
    return grid


def _depth_first(span: Span, depth: int = 0) -> Iterator[tuple[int, Span]]:
    yield depth, span
    for child in sorted(span.children, key=lambda c: c.start_ns):  # sorted() is stable: ties keep the tree's order
        yield from _depth_first(child, depth + 1)


def _status(status: int) -> Text:
    if not status:
        return Text("-", style="dim")  # not known (a record was lost)
    return Text(str(status), style="red" if status >= 500 else "yellow" if status >= 400 else "green")


def kept_traces(info: dict[str, Any], *, everything: bool = False) -> list[Trace]:
    """The traces a running node's rings still hold (node.json's ``traces``), the latest
    first: those its gateways kept (sampled, or kept by a tail rule), or ``everything``
    recorded. Read from /dev/shm without attaching; records overwritten since are holes
    (``Trace.complete``)."""
    names = TraceNames.from_json(info["names"])
    with open_segments(info["segments"], info["capacity"]) as reader:
        records = reader.latest()
    by_request: dict[int, list[Record]] = {}
    servers = []
    for record in records:
        if record.kind == SERVER:
            if everything or record.sampled & KEPT:
                servers.append(record)
        else:
            by_request.setdefault(record.request_id, []).append(record)
    servers.sort(key=lambda server: server.t3, reverse=True)
    # a request id comes round again: each SERVER takes its own request's records (assemble
    # drops those older than the request), and a later one of the same id those after it
    return [assemble(server, [r for r in by_request.get(server.request_id, ()) if r.t0 <= server.t3], names)
            for server in servers]
