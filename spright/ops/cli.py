"""The ``spright`` command: run a node, show its routes and counters, diagnose the machine."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from spright.data.config import Config
from spright.host.nodefile import NodeFile
from spright.node.loader import REMOTES_ENV, AppNotFound, load_app
from spright.ops import certs, changes
from spright.ops.certs import INSECURE_PEERS, TLS_CA, TLS_CERT, TLS_KEY
from spright.ops.console import NODE_HELP, PORT_HELP, chosen_node, console, fail
from spright.ops.deploy import deploy_app
from spright.ops.nodes import live_routes, snapshot
from spright.ops.statsview import rates, stats_table
from spright.ops.traceview import kept_traces, summary_table, waterfall
from spright.ops.tuning import latency_hints
from spright.routing import RoutingError
from spright.transport import registry

cli = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Serverless function chains over shared memory.")
cli.add_typer(deploy_app, name="deploy")

# What `spright run` and `spright gateway` do not say is the app's Config's (App(config=...)),
# else Config's own default: an option only overrides what it is given.
DEFAULTS = Config()


def _default(name: str) -> str:
    return f" (default: {getattr(DEFAULTS, name)}, or the app's Config.{name})"


# tracing (docs/tracing.md), for `spright run` and `spright gateway` alike
TRACE_SAMPLE = typer.Option(
    None, metavar="SHARE", help="Trace this share of requests, 0..1 (a sampled traceparent always is).")
TRACE_SLOWER_THAN = typer.Option(
    None, metavar="SECONDS", help="Trace every request; keep those slower than this whatever the share.")
TRACE_ERRORS = typer.Option(
    None, "--trace-errors/--no-trace-errors", help="Trace every request; keep those answered 5xx.")
MAX_IN_FLIGHT = typer.Option(
    None, metavar="N", help="Requests one gateway process has down its chains at most; past it, 503 with "
                            "Retry-After (default: from the entry functions' concurrency and the pool).")
OTLP = typer.Option(
    None, metavar="URL", help="Send kept traces to this OTLP/HTTP collector (http://HOST:4318/v1/traces).")


@cli.command()
def run(
    app: str = typer.Argument(..., help="MODULE or MODULE:APP, e.g. examples.echo:app"),
    host: str | None = typer.Option(None, help="Address to listen on" + _default("host")),
    port: int | None = typer.Option(None, help="HTTP port" + _default("port")),
    transport: str | None = typer.Option(None, help="auto, " + ", ".join(registry()) + _default("transport")),
    poll_idle_us: int | None = typer.Option(
        None, envvar="SPRIGHT_POLL_IDLE_US",
        help="poll: sleep after this many µs without a descriptor (default: spin for ever).",
    ),
    sidecar: bool | None = typer.Option(None, "--sidecar/--no-sidecar",
                                        help="http: a queue-proxy-like process in front of each function."),
    sidecar_concurrency: int | None = typer.Option(
        None, help="http --sidecar: requests a sidecar lets reach its function at once (0: no limit)."),
    ingress: bool | None = typer.Option(
        None, "--ingress/--no-ingress",
        help="http --sidecar: every hop first through one nginx ingress (the paper's Knative)."),
    ingress_connections: int | None = typer.Option(
        None, help="http --ingress: a sender's connections per destination (past 1: in order per request only)."),
    instances: list[str] = typer.Option(  # noqa: B008 (typer's way to declare a repeatable option)
        [], "--instances", metavar="NAME=N", help="Run function NAME as N worker processes (repeatable)."),
    gateways: int | None = typer.Option(
        None, help="Gateway processes sharing the port (default: 1 on 2 cores or fewer, else half the cores)."),
    balance: str | None = typer.Option(
        None, help="How a function's instance is picked: least_in_flight or round_robin" + _default("balance")),
    remotes: str | None = typer.Option(
        None, envvar=REMOTES_ENV, metavar="JSON",
        help='Functions other nodes serve, e.g. {"pay": "http://10.0.0.2:8080"}; the rest run here, exposed.'),
    trace_sample: float | None = TRACE_SAMPLE,
    trace_slower_than: float | None = TRACE_SLOWER_THAN,
    trace_errors: bool | None = TRACE_ERRORS,
    otlp: str | None = OTLP,
    worker_start: str | None = typer.Option(
        None, help="fork: workers fork from a template process that imported the app once (warm, ~ms); "
                   "spawn: each imports it afresh (for apps that start threads at import)" + _default("worker_start")),
    reload: bool | None = typer.Option(
        None, "--reload", help="Development: reload the functions whose source (*.py beside the app) changes."),
    tls_cert: str | None = TLS_CERT,
    tls_key: str | None = TLS_KEY,
    tls_ca: str | None = TLS_CA,
    insecure_peers: bool | None = INSECURE_PEERS,
    user: str | None = typer.Option(
        None, help="The user workers run as once sealed (default: 'spright' if it exists, else 'nobody'); "
                   "'root' keeps root: not recommended. The gateway stays root."),
    max_in_flight: int | None = MAX_IN_FLIGHT,
) -> None:
    """Serve APP: gateway plus one worker process per function (or per instance)."""
    if remotes:
        os.environ[REMOTES_ENV] = remotes  # every process of the node loads the app so
    _serve(app, host=host, port=port, transport=transport, poll_idle_us=poll_idle_us, sidecar=sidecar,
           sidecar_concurrency=sidecar_concurrency, ingress=ingress,
           ingress_connections=ingress_connections, instances=_instance_counts(instances) or None,
           gateways=gateways, balance=balance, trace_sample=trace_sample, trace_slower_than=trace_slower_than,
           trace_errors=trace_errors, otlp=otlp, worker_start=worker_start, reload=reload, tls_cert=tls_cert,
           tls_key=tls_key, tls_ca=tls_ca, insecure_peers=insecure_peers, user=user, max_in_flight=max_in_flight)


@cli.command()
def gateway(
    app: str = typer.Argument(..., help="MODULE or MODULE:APP, e.g. examples.echo:app"),
    node_dir: Path = typer.Option(..., help="The node directory its workers join (shared with them)."),  # noqa: B008
    host: str | None = typer.Option(None, help="Address to listen on" + _default("host")),
    port: int | None = typer.Option(None, help="HTTP port" + _default("port")),
    transport: str | None = typer.Option(None, help="auto, skmsg or unix" + _default("transport")),
    gateways: int | None = typer.Option(None, help="Gateway processes sharing the port (default: by cores)."),
    balance: str | None = typer.Option(None, help="least_in_flight or round_robin" + _default("balance")),
    trace_sample: float | None = TRACE_SAMPLE,
    trace_slower_than: float | None = TRACE_SLOWER_THAN,
    trace_errors: bool | None = TRACE_ERRORS,
    otlp: str | None = OTLP,
    reload: bool | None = typer.Option(None, "--reload", hidden=True),  # refused, saying why (Config)
    tls_cert: str | None = TLS_CERT,
    tls_key: str | None = TLS_KEY,
    tls_ca: str | None = TLS_CA,
    insecure_peers: bool | None = INSECURE_PEERS,
    max_in_flight: int | None = MAX_IN_FLIGHT,
    workers_group: int | None = typer.Option(
        None, metavar="GID", help="The group the workers' containers run as, when this gateway runs as root "
                                  "(skmsg): it hands them the node's files (join.json, pools, locks, counters, "
                                  "sockets), 0660/0640 to that group and nobody else. Needs GID among the "
                                  "gateway's groups (the pod's fsGroup) or CAP_CHOWN."),
) -> None:
    """Serve APP's gateway and data plane only: its workers start on their own (`spright worker`,
    one per container of a pod) and join through NODE_DIR; it serves once all have."""
    _serve(app, node_dir=str(node_dir), host=host, port=port, transport=transport, gateways=gateways, balance=balance,
           trace_sample=trace_sample, trace_slower_than=trace_slower_than, trace_errors=trace_errors, otlp=otlp,
           reload=reload, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca, insecure_peers=insecure_peers,
           max_in_flight=max_in_flight, workers_group=workers_group)


@cli.command()
def worker(
    app: str = typer.Argument(..., help="MODULE or MODULE:APP: the gateway's."),
    process: str = typer.Argument(..., help="The worker process to run: a function's name, or a process= group."),
    node_dir: Path = typer.Option(..., help="The node directory of the gateway to join.",  # noqa: B008
                                  readable=False),  # searchable is enough: a root gateway's is 0710 (join.hand_over)
    instance: int = typer.Option(0, help="Which instance of the process this is."),
    wait: float = typer.Option(120.0, help="Seconds to wait for the gateway to start."),
) -> None:
    """Run one worker process of APP and join the node whose gateway serves in NODE_DIR; it
    waits for the gateway, and exits when the gateway does (a container restarts it)."""
    from spright.node.join import join_main

    try:
        join_main(node_dir, app, process, instance, wait)
    except (AppNotFound, ValueError, RuntimeError, TimeoutError, OSError) as exc:
        raise fail(str(exc)) from None


def _serve(app: str, **options: Any) -> None:
    """Run the node with the options given on the command line over the app's Config."""
    from spright.node.supervisor import Supervisor

    options = {name: value for name, value in options.items() if value is not None}

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        supervisor = Supervisor(app, **options)
    except (AppNotFound, ValueError) as exc:  # RoutingError, and Config's own checks
        raise fail(str(exc)) from None
    try:
        supervisor.run()
    except (RuntimeError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None


def _instance_counts(options: list[str]) -> tuple[tuple[str, int], ...]:
    """``--instances NAME=N`` options as (name, N) pairs; a clear error for a malformed one."""
    counts = []
    for option in options:
        name, _, count = option.partition("=")
        if not name or not count.isdigit():
            raise fail(f"--instances takes NAME=N (a function name and a count), got {option!r}")
        counts.append((name, int(count)))
    return tuple(counts)


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")


@cli.command()
def routes(
    app: str | None = typer.Argument(None, help="MODULE or MODULE:APP (optional with --live)"),
    live: bool = typer.Option(False, "--live", help="The route table of the running node."),
    node: int | None = typer.Option(None, "--node", help=NODE_HELP),
    port: int | None = typer.Option(None, "--port", help=PORT_HELP),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the route table: route, method, path, chain of function names and ids.

    From MODULE: the table the DSL compiles. With --live: the running node's, read back from
    the data plane (the BPF map, on skmsg) or else from the table its supervisor recorded.
    """
    if live:
        data = live_routes(chosen_node(node, port))
        if json:
            return _print_json(data)
        where = {"bpf-map": "read back from the BPF map", "data-plane": "read back from the data plane",
                 "node-file": "the compiled table the supervisor recorded in node.json (this transport "
                              "keeps no route table of its own)"}[data["source"]]
        info = data["node"]
        _print_routes(data["routes"], f"routes of {info['app']!r} (pid {info['pid']}, port {info['port']}, "
                      f"{info['transport']})", f"source: {where}")
        return
    if app is None:
        raise fail("give MODULE[:APP], or --live for the running node")
    try:
        table = load_app(app).compile()
    except (AppNotFound, RoutingError) as exc:
        raise fail(str(exc)) from None
    rows = table.describe()
    if json:
        return _print_json({"functions": table.describe_functions(), "routes": rows})
    _print_routes(rows, f"routes of {app}", None)


def _print_routes(rows: list[dict[str, Any]], title: str, caption: str | None) -> None:
    grid = Table(title=title, caption=caption)
    for column in ("method", "path", "chain id", "hops (id:name)", "timeout"):
        grid.add_column(column)
    for row in rows:
        hops = " → ".join(f"{hop['id']}:{hop['name']}" for hop in row["hops"])
        grid.add_row(row["method"], row["path"], str(row["chain"]), hops, f"{row['timeout']:g}s")
    console.print(grid)


@cli.command()
def trace(
    trace_id: str | None = typer.Argument(None, help="A trace id (its 32 hex digits, or how they start): it alone."),
    last: int = typer.Option(3, "--last", min=1, help="How many traces to draw (after --slowest: the slowest)."),
    slowest: bool = typer.Option(False, "--slowest", help="The slowest traces the node holds, not the latest."),
    everything: bool = typer.Option(False, "--all", help="Every recorded request, not only the kept ones."),
    node: int | None = typer.Option(None, "--node", help=NODE_HELP),
    port: int | None = typer.Option(None, "--port", help=PORT_HELP),
) -> None:
    """The running node's last kept traces: a list, then each as a waterfall (every hop and
    ctx.call of the request, its queue wait and the data plane's time). The node must trace:
    `spright run --trace-sample SHARE` (or --trace-slower-than, --trace-errors, --otlp)."""
    chosen = chosen_node(node, port)
    if not chosen.traces:
        raise fail(f"node {chosen.pid} does not trace: start it with --trace-sample SHARE (0..1), "
                    "--trace-slower-than SECONDS or --trace-errors")
    traces = kept_traces(chosen.traces, everything=everything)
    if trace_id is not None:
        traces = [t for t in traces if f"{t.trace_id:032x}".startswith(trace_id.lower())]
        if not traces:
            raise fail(f"no trace {trace_id!r} in the node's rings (they keep the latest records only)")
    elif slowest:
        traces.sort(key=lambda t: t.root.duration_ns, reverse=True)
    if not traces:
        console.print("no trace kept yet" + ("" if everything else " (--all shows every recorded request)"))
        return
    shown = traces[: 1 if trace_id else last]
    console.print(summary_table(traces[:20]))
    for one in shown:  # the bars take what the span's columns leave of the terminal
        console.print(waterfall(one, width=max(10, console.width - 90)))


@cli.command()
def stats(
    node: int | None = typer.Option(None, "--node", help=NODE_HELP),
    port: int | None = typer.Option(None, "--port", help=PORT_HELP),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    watch: float | None = typer.Option(
        None, "--watch", metavar="[SECONDS]", help="Refresh every SECONDS (1 if omitted) with per-second rates."
    ),
) -> None:
    """Per-function counters of the running node: descriptors in/out, payload bytes, handler
    errors, calls, and the data plane's own (kernel) counters when it keeps them."""
    chosen = chosen_node(node, port)
    if watch is None:
        if json:
            return _print_json(_read(chosen))
        console.print(stats_table(_read(chosen), None, 0.0))
        return
    interval = max(watch, 0.1)
    try:
        if json:  # one JSON document per refresh and nothing else, even on a terminal
            for current, previous, seconds in _refreshes(chosen, interval):
                _print_json({**current, "rates": rates(current, previous, seconds)})
        else:
            with Live(stats_table(_read(chosen), None, 0.0), console=console, auto_refresh=False) as live:
                for current, previous, seconds in _refreshes(chosen, interval):
                    live.update(stats_table(current, previous, seconds), refresh=True)
    except KeyboardInterrupt:
        pass


def _refreshes(node: NodeFile, interval: float) -> Iterator[tuple[dict[str, Any], dict[str, Any], float]]:
    """Every ``interval`` seconds: (counters now, counters at the previous refresh, seconds between)."""
    previous, then = _read(node), time.monotonic()
    while True:
        time.sleep(interval)
        current, now = _read(node), time.monotonic()
        yield current, previous, now - then
        previous, then = current, now


def _read(node: NodeFile) -> dict[str, Any]:
    try:
        return snapshot(node)
    except FileNotFoundError:  # the node stopped (its counter segment is gone)
        console.print(f"the spright node {node.pid} has stopped", markup=False)
        raise typer.Exit(1) from None


for command in (changes.scale, changes.reload, changes.rollout, certs.certs):
    cli.command()(command)


@cli.command()
def doctor() -> None:
    """Which data planes this machine supports, and how to fix the ones it does not."""
    grid = Table(title="spright transports")
    grid.add_column("transport")
    grid.add_column("status")
    grid.add_column("details")
    usable = []
    for name, cls in registry().items():
        reason = cls.unavailable_reason()
        if reason is None:
            usable.append(name)
        grid.add_row(name, "[green]ok[/]" if reason is None else "[red]unavailable[/]", escape(reason or cls.summary))
        for option, missing, what in cls.option_checks():  # e.g. --ingress: nginx
            grid.add_row(option, "[green]ok[/]" if missing is None else "[yellow]unavailable[/]",
                         escape(missing or what))
    console.print(grid)
    console.print(f"--transport auto would use: [bold]{usable[0] if usable else 'nothing'}[/]")
    hints = Table(title="latency on this machine")
    for column in ("check", "status", "details"):
        hints.add_column(column)
    for check, fine, details in latency_hints():
        hints.add_row(check, "[green]ok[/]" if fine else "[yellow]slower[/]", escape(details))
    console.print(hints)


def main() -> None:
    cli(_optional_watch_value(sys.argv[1:]))


def _optional_watch_value(args: list[str]) -> list[str]:
    """``--watch`` alone means every second (typer options cannot take an optional value)."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--watch":
            following = args[i + 1] if i + 1 < len(args) else "-"
            try:
                float(following)
            except ValueError:
                out.append("1")
    return out
