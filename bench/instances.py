"""What more processes buy, measured: ``python -m bench.instances [--quick]``.

- gateways: the noop chain under ``wrk -c64`` with 1, then 2 gateway processes (``--gateways``);
- cpu: a CPU-bound function (``bench.apps:burn``, ~2 ms of Python per request) under
  ``wrk -c16``: requests per second with 1, then 2 instances (``--instances burn=N``);
- balance: a function whose cost varies (``bench.apps:skewed``: one request in twenty costs
  25x) with 2 instances under ``wrk -c16``, picked round robin, then least in flight
  (``--balance``): requests per second and p99 latency;
- cold start: a function scaled to zero (``bench.apps:sleepy``): latency of a request with an
  instance serving, and of the first request after it scaled to zero (the activator starts one),
  with each ``--worker-start`` (the first, fork, is the summary's; alternately with the others);
- parking: one burst of 164 photos (upstream's burst) at the parking chain: wall time until
  the last answer, with 1, then 2 detection instances (the OCR function);
- reload, canary: the issue's goals for revisions on the Online Boutique (bench.revisions):
  ``spright reload`` of every function under the mix at half its saturated rate (no failed
  request, p99 during <= 3x before), and a canary at ``--traffic 10`` (10 % +- 2 % of its
  function's descriptors, no process left after ``--rollback``).

Each pair runs alternately ``--rounds`` times on the same data plane, ratios from the best of
each. Writes bench/results/instances-<stamp>.json (instances-revisions-<stamp>.json when only
reload and canary run) and prints a summary, the revision goals met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from apps.parking import load as parking_load
from bench.load import WrkResult, run_wrk, write_script
from bench.procs import Server
from bench.revisions import canary_goals, canary_part, reload_goals, reload_part
from spright.ops.nodes import choose_node
from spright.testing import free_port, node_metric

RESULTS = Path(__file__).with_name("results")
READY = re.compile(r"spright: sleepy ready ([0-9.]+) ms after its process's start began")
# --only: what wrk and the burst measure, the cold starts, a reload under load, a canary's share
PARTS = ("throughput", "cold_start", "reload", "canary")
REVISION_PARTS = {"reload", "canary"}
BALANCES = ("round_robin", "least_in_flight")
ROOT = Path(__file__).resolve().parent.parent


def serve(app: str, transport: str, options: list[str], port: int, log: Path) -> Server:
    argv = [sys.executable, "-m", "spright", "run", app, "--port", str(port), "--transport", transport, *options]
    server = Server(argv, [port], log, ROOT)
    server.start()
    return server


def load(app: str, transport: str, options: list[str], connections: int, seconds: float,
         workdir: Path) -> WrkResult:
    """``wrk`` GET / against a fresh node of ``app`` started with ``options``."""
    port = free_port()
    server = serve(app, transport, options, port, workdir / f"{app.rpartition(':')[2]}-{'-'.join(options)}.log")
    try:
        script = write_script("GET", None, workdir)
        run_wrk(f"http://127.0.0.1:{port}/", script, connections, 1)  # warm-up
        return run_wrk(f"http://127.0.0.1:{port}/", script, connections, seconds)
    finally:
        server.stop()


def cold_start(transport: str, starts: int, workdir: Path, worker_start: str = "fork") -> dict[str, Any]:
    """``bench.apps:sleepy`` (min_instances=0): the latency of a request while the function has
    an instance (median of 50) and of the first request after it scaled to zero (each of
    ``starts``); the difference is what the activator's cold start adds."""
    port = free_port()
    server = serve("bench.apps:sleepy", transport, ["--worker-start", worker_start], port,
                   workdir / f"sleepy-{worker_start}.log")
    gauge = 'spright_instances{domain="bench-sleepy",function="sleepy"}'
    try:
        warm = statistics.median(_timed_get(port) for _ in range(50))
        cold = []
        for _ in range(starts):
            deadline = time.monotonic() + 30
            while node_metric(port, gauge) > 0 or _instance_process_alive(port):
                if time.monotonic() > deadline:
                    raise RuntimeError("sleepy did not scale to zero within 30 s")
                time.sleep(0.1)
            cold.append(_timed_get(port))
    finally:
        server.stop()
    # the supervisor logs each instance's start: from the start of its process to its READY
    ready = [float(m[1]) for m in READY.finditer(server.log_path.read_text(errors="replace"))]
    return {"warm_ms": round(warm * 1e3, 2), "cold_ms": [round(c * 1e3, 1) for c in cold],
            "start_ms": ready[-starts:]}


def _timed_get(port: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        started = time.perf_counter()
        connection.request("GET", "/")
        reply = connection.getresponse()
        reply.read()
        took = time.perf_counter() - started
    finally:
        connection.close()
    if reply.status != 200:
        raise RuntimeError(f"GET / answered {reply.status}")
    return took


def _instance_process_alive(port: int) -> bool:
    return any(name.startswith("sleepy") for name in choose_node(port=port).workers)


def parking(transport: str, count: int, burst: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    server = serve("apps.parking:app", transport, ["--instances", f"detection={count}"], port,
                   workdir / f"parking{count}.log")
    try:
        out = asyncio.run(parking_load.run(f"http://127.0.0.1:{port}", burst, 1.0, 1, photos=8))
        return {"wall_s": out["burst_wall_s"][0], "statuses": out["statuses"]}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instances", description=__doc__.splitlines()[0])
    parser.add_argument("--transport", default="skmsg")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk seconds per cpu run")
    parser.add_argument("--burst", type=int, default=164)
    parser.add_argument("--quick", action="store_true", help="1 round, 3 s runs, a burst of 40")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts (repeatable)")
    parser.add_argument("--starts", type=int, default=3, help="cold starts per round and worker start")
    parser.add_argument("--worker-start", dest="worker_starts", action="append", choices=("fork", "spawn"),
                        help="cold starts with each (repeatable; default fork, then spawn)")
    parser.add_argument("--reload-seconds", type=float, default=10.0,
                        help="reload: seconds of open-loop load before the reload, and again after its drain")
    parser.add_argument("--canary-requests", type=int, default=10_000, help="canary: product pages sent")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.burst = 1, 3.0, 40
    parts = set(args.only or PARTS)
    worker_starts = args.worker_starts or ["fork", "spawn"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path("/tmp") / f"spright-bench-instances-{stamp}"
    workdir.mkdir(parents=True)
    runs: dict[str, dict[Any, list[Any]]] = {"gateways_rps": {1: [], 2: []}, "cpu_rps": {1: [], 2: []},
                                             "balance": {b: [] for b in BALANCES}, "parking": {1: [], 2: []},
                                             "cold_start": {"runs": []},
                                             "cold_start_by": {how: [] for how in worker_starts},
                                             "reload": {"runs": []}, "canary": {"runs": []}}
    for _ in range(args.rounds):
        if "reload" in parts:
            runs["reload"]["runs"].append(reload_part(args.transport, workdir, saturate_s=min(args.seconds, 5.0),
                                                      before=args.reload_seconds, after=args.reload_seconds))
        if "canary" in parts:
            runs["canary"]["runs"].append(canary_part(args.transport, workdir, args.canary_requests))
        if "cold_start" in parts:
            for how in worker_starts:
                runs["cold_start_by"][how].append(cold_start(args.transport, args.starts, workdir, how))
            runs["cold_start"]["runs"].append(runs["cold_start_by"][worker_starts[0]][-1])
        if "throughput" not in parts:
            continue
        for count in (1, 2):
            runs["gateways_rps"][count].append(round(load("bench.apps:noop", args.transport, ["--gateways", str(count)],
                                                          64, args.seconds, workdir).rps))
        for count in (1, 2):
            options = ["--instances", f"burn={count}"]
            runs["cpu_rps"][count].append(round(load("bench.apps:burn", args.transport, options, 16, args.seconds,
                                                     workdir).rps))
        for balance in BALANCES:
            result = load("bench.apps:skewed", args.transport, ["--instances", "skewed=2", "--balance", balance],
                          16, args.seconds, workdir)
            runs["balance"][balance].append({"rps": round(result.rps), "p50_us": result.p50_us,
                                             "p99_us": result.p99_us, "errors": result.errors})
        for count in (1, 2):
            runs["parking"][count].append(parking(args.transport, count, args.burst, workdir))
    summary: dict[str, Any] = {"transport": args.transport, "rounds": args.rounds, "burst": args.burst}
    lines = []
    if "throughput" in parts:
        best_gateways = {n: max(v) for n, v in runs["gateways_rps"].items()}
        best_rps = {n: max(v) for n, v in runs["cpu_rps"].items()}
        best_wall = {n: min(r["wall_s"] for r in v) for n, v in runs["parking"].items()}
        balances = {b: {"rps": max(r["rps"] for r in v), "p50_us": min(r["p50_us"] for r in v),
                        "p99_us": min(r["p99_us"] for r in v)} for b, v in runs["balance"].items()}
        summary.update({
            "gateways_rps": best_gateways, "gateways_ratio": round(best_gateways[2] / best_gateways[1], 2),
            "cpu_rps": best_rps, "cpu_ratio": round(best_rps[2] / best_rps[1], 2),
            "balance": balances,
            "parking_wall_s": best_wall, "parking_speedup": round(best_wall[1] / best_wall[2], 2),
        })
        lines.append(f"noop chain, wrk -c64: 1 gateway {best_gateways[1]:,} req/s, 2 gateways "
                     f"{best_gateways[2]:,} req/s ({summary['gateways_ratio']}x)")
        lines.append(f"cpu-bound function, wrk -c16: 1 instance {best_rps[1]:,} req/s, 2 instances "
                     f"{best_rps[2]:,} req/s ({summary['cpu_ratio']}x)")
        for name, figures in balances.items():
            lines.append(f"varying cost, 2 instances, wrk -c16, {name}: {figures['rps']:,} req/s, "
                         f"p50 {figures['p50_us']:,} us, p99 {figures['p99_us']:,} us")
        lines.append(f"parking burst of {args.burst}: 1 detection instance {best_wall[1]:.2f} s, 2 instances "
                     f"{best_wall[2]:.2f} s ({summary['parking_speedup']}x sooner)")
    if "cold_start" in parts:
        summary["cold_start"] = cold_summary(runs["cold_start"]["runs"])
        summary["cold_start_by"] = {how: cold_summary(r) for how, r in runs["cold_start_by"].items()}
        for how, figures in summary["cold_start_by"].items():
            lines.append(f"scale to zero ({how}): a request takes {figures['warm_ms']} ms with an instance, "
                         f"{figures['cold_ms_median']} ms (median) when it first needs one: "
                         f"+{figures['extra_ms_p50']} ms p50, +{figures['extra_ms_p99']} ms p99; a worker's start "
                         f"(its process's start to its READY) {figures['start_ms_median']} ms (median)")
    for part, goals in (("reload", reload_goals), ("canary", canary_goals)):
        if part in parts:
            summary[part], part_lines = goals(runs[part]["runs"])
            lines.extend(part_lines)
    summary["runs"] = runs
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"instances-{'revisions-' if parts <= REVISION_PARTS else ''}{stamp}.json"
    out.write_text(json.dumps(summary, indent=2))
    for line in lines:
        print(line)
    print(f"-> {out}")


def cold_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over rounds: the best warm latency, the median cold one, and what a cold start adds to a
    request (cold minus its round's warm median), p50 and p99 (nearest rank)."""
    extra = sorted(c - r["warm_ms"] for r in runs for c in r["cold_ms"])
    return {"warm_ms": min(r["warm_ms"] for r in runs),
            "cold_ms_median": statistics.median(c for r in runs for c in r["cold_ms"]),
            "extra_ms_p50": round(statistics.median(extra), 1),
            "extra_ms_p99": round(extra[min(len(extra) - 1, math.ceil(0.99 * len(extra)) - 1)], 1),
            "starts": len(extra),
            "start_ms_median": statistics.median(s for r in runs for s in r.get("start_ms", [])) if any(
                r.get("start_ms") for r in runs) else None}


if __name__ == "__main__":
    main()
