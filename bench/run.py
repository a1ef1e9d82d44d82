"""Run every scenario once, sequentially, each against a fresh server, and write the results.

Sequential on purpose: on a 2-core machine wrk takes one core, so two servers at once would
measure the scheduler, not the data plane. ``python -m bench.run [--quick] [--only noop,raw]``.

Each scenario's load run is bracketed by two short runs of the raw server (kept up, idle, for
the whole run), so the results show the ceiling at that moment: on this VM the raw server alone
flips between ~113k and ~145k req/s within minutes. Ratios use the fastest raw figure of the
run (see ``bench.report.derive`` for why not the bracket).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.load import run_wrk, write_boutique_script, write_script
from bench.procs import Server, free_ports, machine_busy_seconds
from bench.report import derive, markdown
from spright.ops.tuning import halt_polling_off, shared_libpython

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
POST_BODY = b"x" * 64
console = Console(stderr=True)


@dataclass(frozen=True)
class Scenario:
    name: str  # raw, noop, echo3, chain10, chain10_shared, aiohttp, product, mix
    transport: str  # the spright transport, or "-" for the baselines
    label: str
    method: str
    body: bytes | None
    expect: bytes  # the response body a correct server gives (for the boutique: a part of it)
    app: str = ""  # MODULE:APP, when not bench.apps:<name>
    path: str = "/"


BOUTIQUE = "apps.online_boutique:app"
PRODUCT_PAGE = "/product/OLJCESPC7Z"


RAW = Scenario("raw", "-", "raw uvloop+httptools", "GET", None, b"hello")


@dataclass(frozen=True)
class Reference:
    """The raw server that brackets every scenario's load run."""

    url: str
    script: Path
    seconds: float


def scenarios(only: set[str] | None, transports: list[str]) -> list[Scenario]:
    """raw first (its own latency and CPU figures), spright per transport, then aiohttp."""
    out = [RAW]
    for transport in transports:
        out += [
            Scenario("noop", transport, "spright noop (1 fn)", "GET", None, b"hello"),
            Scenario("echo3", transport, "spright echo3 (3 fn, 64 B POST)", "POST", POST_BODY, POST_BODY),
            Scenario("chain10", transport, "spright chain10 (10 fn)", "GET", None, b"hello"),
            Scenario("chain10_shared", transport, "spright chain10, one process", "GET", None, b"hello"),
            Scenario("product", transport, "boutique product page", "GET", None, b"Harbor Sunglasses",
                     BOUTIQUE, PRODUCT_PAGE),
            Scenario("mix", transport, "boutique, upstream's mix", "GET", None, b"Spright Boutique", BOUTIQUE),
        ]
    out.append(Scenario("aiohttp", "http", "aiohttp 3-process chain (64 B POST)", "POST", POST_BODY, POST_BODY))
    return [s for s in out if only is None or s.name in only]


def command(s: Scenario) -> tuple[list[str], list[int]]:
    if s.name == "raw":
        (port,) = free_ports(1)
        return [PYTHON, "-m", "bench.raw_server", str(port)], [port]
    if s.name == "aiohttp":
        ports = free_ports(3)
        return [PYTHON, "-m", "bench.aiohttp_chain", *map(str, ports)], ports
    (port,) = free_ports(1)
    app = s.app or f"bench.apps:{s.name}"
    return [PYTHON, "-m", "spright", "run", app, "--port", str(port), "--transport", s.transport], [port]


def check_response(s: Scenario, port: int) -> None:
    """One request before any load: a server that answers wrongly must not get a throughput figure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(s.method, s.path, body=s.body)
        reply = conn.getresponse()
        body = reply.read()
    finally:
        conn.close()
    if reply.status != 200 or (body != s.expect if not s.app else s.expect not in body):
        raise RuntimeError(f"bad response: {reply.status} {body[:80]!r} (expected 200 {s.expect[:80]!r})")


def node_info(pid: int) -> dict[str, Any] | None:
    """What the supervisor says it runs (transport actually chosen, worker pids)."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(Path(f"/run/spright/{pid}/node.json").read_text())
    return None


def process_name(pid: int, node: dict[str, Any] | None) -> str:
    """Worker names from node.json, so the breakdown shows which hop burns the CPU."""
    if node:
        if pid == node.get("pid"):
            return f"gateway/supervisor {pid}"
        for name, worker_pid in node.get("workers", {}).items():
            if worker_pid == pid:
                return f"{name} {pid}"
    with contextlib.suppress(OSError):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return f"{' '.join(a.decode(errors='replace') for a in args[1:4])[:60]} {pid}"
    return str(pid)


def measure(s: Scenario, args: argparse.Namespace, workdir: Path, reference: Reference | None) -> dict[str, Any]:
    argv, ports = command(s)
    result: dict[str, Any] = {"scenario": s.name, "transport": s.transport, "label": s.label, "command": argv}
    server = Server(argv, ports, workdir / f"{s.name}-{s.transport}-{ports[0]}.log", ROOT)
    url = f"http://127.0.0.1:{ports[0]}{s.path}"
    script = write_boutique_script(workdir) if s.name == "mix" else write_script(s.method, s.body, workdir)
    try:
        server.start()
        assert server.process is not None
        if s.name not in ("raw", "aiohttp"):
            info = node_info(server.process.pid)
            result["node"] = info
            if info and info.get("transport") != s.transport:
                raise RuntimeError(f"node runs transport {info.get('transport')!r}, not {s.transport!r}")
        check_response(s, ports[0])
        result["processes"] = len(server.pids)
        console.log(f"  warm-up {args.warmup}s")
        run_wrk(url, script, args.connections, args.warmup)
        raw_before = raw_rps(reference, args.connections)
        console.log(f"  load -c{args.connections} {args.duration}s")
        before, busy_before = server.cpu(), machine_busy_seconds()
        load = run_wrk(url, script, args.connections, args.duration)
        after, busy = server.cpu(), machine_busy_seconds() - busy_before
        if reference is not None:
            result["raw_alongside"] = [raw_before, raw_rps(reference, args.connections)]
        per_pid = {pid: round(after.get(pid, 0.0) - before.get(pid, 0.0), 2) for pid in server.pids}
        spent = sum(per_pid.values())
        result["server_cpu_by_process"] = {process_name(pid, result.get("node")): cpu for pid, cpu in per_pid.items()}
        result["load"] = load.to_dict()
        result["server_cpu_s"] = round(spent, 3)
        if load.duration_s:
            result["server_cores_busy"] = round(spent / load.duration_s, 2)
            result["client_cores_busy"] = round(load.client_cpu_s / load.duration_s, 2)
            result["machine_cores_busy"] = round(busy / load.duration_s, 2)
            result["other_cores_busy"] = round((busy - spent - load.client_cpu_s) / load.duration_s, 2)
        result["cpu_us_per_request"] = round(spent / load.requests * 1e6, 1) if load.requests else None
        if args.low_load_duration > 0:
            console.log(f"  low load -c1 {args.low_load_duration}s")
            result["low_load"] = run_wrk(url, script, 1, args.low_load_duration).to_dict()
        check_response(s, ports[0])  # still correct after the load
    except Exception as exc:  # one broken scenario must not lose the others' figures
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tail"] = server.tail()
        console.log(f"[red]  {s.label} ({s.transport}) failed: {exc}")
    finally:
        result["stop"] = server.stop()
        if not result["stop"]["clean"]:
            console.log(f"[yellow]  server needed SIGKILL for pids {result['stop']['killed']}")
        result["log"] = str(server.log_path)
    return result


def raw_rps(reference: Reference | None, connections: int) -> float | None:
    if reference is None:
        return None
    console.log(f"  raw server alongside, {reference.seconds}s")
    return run_wrk(reference.url, reference.script, connections, reference.seconds).rps


@contextlib.contextmanager
def reference_server(args: argparse.Namespace, workdir: Path) -> Iterator[Reference]:
    """The raw server for the brackets, warmed up, up for the whole run."""
    argv, ports = command(RAW)
    server = Server(argv, ports, workdir / f"reference-{ports[0]}.log", ROOT)
    try:
        server.start()
        check_response(RAW, ports[0])
        url = f"http://127.0.0.1:{ports[0]}/"
        script = write_script(RAW.method, RAW.body, workdir)
        run_wrk(url, script, args.connections, args.warmup)
        yield Reference(url, script, args.bracket)
    finally:
        server.stop()


def machine() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
        return ""

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "")
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "python": platform.python_version(),
        "interpreter": os.path.realpath(sys.executable), "shared_libpython": shared_libpython(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wrk": (run("wrk", "--version").splitlines() or [""])[0],
        "commit": run("git", "rev-parse", "--short", "HEAD"), "dirty": bool(run("git", "status", "--porcelain")),
        "guest_halt_polling_off": halt_polling_off(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def available_transports() -> list[str]:
    from spright.transport import registry

    return [name for name, cls in registry().items() if cls.unavailable_reason() is None]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per scenario (default 10)")
    p.add_argument("--quick", action="store_true", help="3 s runs, 2 s low-load runs: for development")
    p.add_argument("--transports", default=None, help="comma list (default: every transport available here)")
    p.add_argument("--only", default=None, help="comma list of raw,noop,echo3,chain10,chain10_shared,aiohttp")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--low-load-duration", type=float, default=None, help="wrk -c1 seconds (default 5, quick 2)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--bracket", type=float, default=None, help="raw-server seconds before and after each scenario "
                   "(default 3, quick 1)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    if args.bracket is None:
        args.bracket = 1.0 if args.quick else 3.0
    if args.low_load_duration is None:
        args.low_load_duration = 2.0 if args.quick else 5.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    transports = args.transports.split(",") if args.transports else available_transports()
    only = set(args.only.split(",")) if args.only else None
    plan = scenarios(only, transports)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="spright-bench-"))
    info = machine()  # before the load, so loadavg shows what else was running
    results = []
    with reference_server(args, workdir) as reference:
        for index, s in enumerate(plan, 1):
            console.rule(f"[{index}/{len(plan)}] {s.label} [{s.transport}]")
            results.append(measure(s, args, workdir, None if s.name == "raw" else reference))
    set_name = ("all" if only is None else "-".join(sorted(only))) + ("-quick" if args.quick else "")
    doc = {
        "machine": info,
        "config": {"duration": args.duration, "connections": args.connections, "threads": 1,
                   "low_load_duration": args.low_load_duration, "warmup": args.warmup, "transports": transports,
                   "bracket": args.bracket,
                   "post_body_bytes": len(POST_BODY), "logs": str(workdir)},
        "results": results,
    }
    doc["derived"] = derive(results)
    text = json.dumps(doc, indent=2)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{set_name}-{stamp}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    table = markdown(doc)
    (RESULTS / "latest.md").write_text(table)
    print(table)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
