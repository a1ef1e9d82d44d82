"""Overload (issue 27): the Online Boutique's product page offered 2x and 5x its saturated rate,
open loop, then the load dropped. Admission control (``Config.max_in_flight``) should keep the
goodput near the saturated rate, the admitted requests' latency bounded, refuse the rest fast
with 503, and serve normally again the moment the load drops.

Steps: the saturated rate (wrk, closed loop, 32 connections: more cannot add throughput); the
unloaded p99 (open loop at a quarter of it); then per factor one open-loop run of ``--seconds``
at factor x saturated followed by as long at a quarter of it. The generator is bench.tailgen's
(timerfd sends, raw keep-alive connections, a new one for a request that finds none idle, so
the connections grow with the node's latency as real clients' would), each answer's status
kept. Latency runs from the scheduled send. Per run: goodput (2xx per second among the requests
due in the overload phase) as a share of saturated, the admitted (2xx) p99, the share refused
503, and the recovery: from the drop, the start of the first half-second window whose p99 is
within 2x the unloaded p99 (and how many later windows were not: on a shared machine, other
load's spikes land there too).

    python -m bench.overload [--seconds 10] [--factors 2,5] [--transport skmsg] [--unbounded]

``--unbounded``: the same with admission off (``max_in_flight`` 2**30), for what it buys;
``--max-in-flight N``: with that bound per gateway process instead of the default.

Results: bench/results/overload-<stamp>.json. The generator shares the machine's cores with the
node (on a 2-core machine it takes a good part of one at 5x): the figures are the pair's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop

from apps.loadkit import require_loopback
from bench.load import run_wrk, write_script
from bench.openloop import schedule
from bench.procs import Server, free_ports
from bench.tailgen import Connection, Run, build_request, drive, percentiles

ROOT = Path(__file__).resolve().parent.parent
PATH = "/product/OLJCESPC7Z"
WINDOW = 0.5  # seconds: the recovery is read in windows of this length
QUIET = 0.25  # the share of the saturated rate offered before and after the overload
GOALS = {"goodput_share": 0.9, "recovery_p99_factor": 2.0}


class StatusRun(Run):
    """bench.tailgen's run, keeping each request's status (refused ones are told apart)."""

    def __init__(self, host: str, port: int, request: bytes, due: list[int]) -> None:
        super().__init__(host, port, request, due)
        self.status = [0] * len(due)

    def answered(self, connection: Connection, status: int) -> None:
        if connection.index >= 0:
            self.status[connection.index] = status
        super().answered(connection, status)
        if not connection.parser.should_keep_alive() and connection in self.idle:  # a 503 that closes
            self.idle.remove(connection)


async def phases(url: str, path: str, steps: list[tuple[float, float]], *, connections: int = 32,
                 grace: float = 15.0, seed: int = 1) -> dict[str, Any]:
    """Open loop through ``steps`` of (rate, seconds) back to back; every request's due time
    (seconds from the start), status (0: no answer) and latency (ns from its due time)."""
    parts = urlsplit(require_loopback(url))
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    rng, offsets, at = random.Random(seed), [], 0.0
    for rate, seconds in steps:
        offsets += [at + offset for offset in schedule(rate, seconds, False, rng)]
        at += seconds
    run = StatusRun(host, port, build_request(host, port, "GET", path, None), [0] * len(offsets))
    await run.open(connections)
    await drive(run, offsets, at + grace)
    latency = [run.answered_at[i] - run.due[i] if run.answered_at[i] else 0 for i in range(len(offsets))]
    lag = [run.sent[i] - run.due[i] for i in range(run.next) if run.sent[i]]
    return {"offsets": offsets, "status": run.status, "latency_ns": latency, "connections": run.connections,
            "errors": run.errors[:5], "sent": run.next, "send_lag": percentiles(lag)}


def summarise(out: dict[str, Any], since: float, until: float, unloaded_p99_ms: float | None,
              saturated_rps: float) -> dict[str, Any]:
    """The overload phase [since, until) and the recovery after it, from ``phases``' output."""
    offsets, status, latency = out["offsets"], out["status"], out["latency_ns"]
    phase = [i for i, t in enumerate(offsets) if since <= t < until]
    ok = [latency[i] for i in phase if 200 <= status[i] < 300]
    refused = sum(1 for i in phase if status[i] == 503)
    seconds = until - since
    figures: dict[str, Any] = {
        "offered": len(phase), "offered_rps": round(len(phase) / seconds, 1), "ok": len(ok),
        "goodput_rps": round(len(ok) / seconds, 1),
        "goodput_share": round(len(ok) / seconds / saturated_rps, 3) if saturated_rps else None,
        "refused_503": refused, "refused_share": round(refused / len(phase), 3) if phase else None,
        "other": len(phase) - len(ok) - refused, "admitted_latency": percentiles(ok),
        "refused_latency": percentiles([latency[i] for i in phase if status[i] == 503]),
        "connections_opened": out["connections"], "error_samples": out["errors"],
        "generator_send_lag": out.get("send_lag"),  # the generator's own falling behind, in its latency
    }
    windows: list[tuple[float, float | None]] = []  # (start after the drop, p99 ms of the 2xx due in it)
    end = max(offsets, default=until)
    start = until
    while start < end:
        inside = [latency[i] for i, t in enumerate(offsets) if start <= t < start + WINDOW and 200 <= status[i] < 300]
        failed = sum(1 for i, t in enumerate(offsets) if start <= t < start + WINDOW and not 200 <= status[i] < 300)
        p99 = percentiles(inside).get("p99_ms") if inside and not failed else None  # a failure: not back yet
        windows.append((round(start - until, 3), p99))
        start += WINDOW
    figures["after_drop_p99_ms"] = windows
    if unloaded_p99_ms is not None:
        bound = GOALS["recovery_p99_factor"] * unloaded_p99_ms
        back = next((k for k, (_, p) in enumerate(windows) if p is not None and p <= bound), None)
        figures["recovery_s"] = None if back is None else windows[back][0]
        # windows over the bound after that: the node's relapses, or (a shared machine) others' load
        figures["later_windows_over"] = 0 if back is None else sum(
            1 for _, p in windows[back:] if p is None or p > bound)
    return figures


def node(transport: str, workdir: Path, max_in_flight: int | None = None) -> tuple[Server, str]:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "spright", "run", "apps.online_boutique:app", "--transport", transport,
            "--port", str(port), *(("--max-in-flight", str(max_in_flight)) if max_in_flight is not None else ())]
    server = Server(argv, [port], workdir / "overload-node.log", ROOT)
    server.start(timeout=90)
    return server, f"http://127.0.0.1:{port}"


def metric(url: str, name: str) -> float | None:
    from spright.testing import node_metric

    try:
        return node_metric(int(urlsplit(url).port or 80), name)
    except KeyError:
        return None


def measure(url: str, seconds: float, factors: list[float], workdir: Path,
            given: float | None = None) -> dict[str, Any]:
    """``given``: take this as the saturated rate (the same offered load across bounds) but measure it still."""
    script = write_script("GET", None, workdir)
    run_wrk(url + PATH, script, 32, 2)  # warm-up
    wrk = run_wrk(url + PATH, script, 32, seconds)
    # 2xx only: with a small bound, wrk's 32 connections may be refused some (wrk counts those as "status")
    measured = round(wrk.rps * (1 - wrk.errors["status"] / wrk.requests), 1) if wrk.requests else 0.0
    saturated = given or measured
    quiet = uvloop.run(phases(url, PATH, [(QUIET * saturated, seconds)]))
    unloaded = summarise(quiet, 0.0, seconds, None, saturated)
    unloaded_p99 = unloaded["admitted_latency"].get("p99_ms")
    report: dict[str, Any] = {"path": PATH, "seconds": seconds, "saturated_rps": saturated,
                              "measured_saturated_rps": measured,
                              "saturated_p99_ms": wrk.p99_us / 1000, "unloaded_rps": round(QUIET * saturated, 1),
                              "unloaded_p99_ms": unloaded_p99, "runs": []}
    for factor in factors:
        refused_before = metric(url, 'spright_requests_refused_total{reason="in_flight"}') or 0.0
        out = uvloop.run(phases(url, PATH, [(factor * saturated, seconds), (QUIET * saturated, seconds)]))
        figures = summarise(out, 0.0, seconds, unloaded_p99, saturated)
        refused_now = metric(url, 'spright_requests_refused_total{reason="in_flight"}') or 0.0
        report["runs"].append({"factor": factor, **figures, "metrics_refused": refused_now - refused_before})
    report["pool_slots_in_use_after"] = metric(url, "spright_pool_slots_in_use")
    return report


def verdict(report: dict[str, Any]) -> dict[str, bool]:
    checks = {}
    for run in report["runs"]:
        factor = f"{run['factor']:g}x"
        checks[f"{factor}: goodput >= {GOALS['goodput_share']:.0%} of saturated"] = (
            (run["goodput_share"] or 0) >= GOALS["goodput_share"])
        checks[f"{factor}: every request answered (2xx or 503)"] = run["other"] == 0
        checks[f"{factor}: p99 back within 2x unloaded after the drop"] = run.get("recovery_s") is not None
    checks["no slot left in use"] = report.get("pool_slots_in_use_after") == 0
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="per step (overload, then recovery)")
    parser.add_argument("--factors", default="2,5", help="offered load as multiples of the saturated rate")
    parser.add_argument("--transport", default="skmsg")
    parser.add_argument("--unbounded", action="store_true", help="admission off, for comparison")
    parser.add_argument("--max-in-flight", type=int, default=None, help="the bound per gateway process")
    parser.add_argument("--saturated", type=float, default=None,
                        help="take this as the saturated rate (compare bounds at the same offered load)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    factors = [float(f) for f in args.factors.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        server, url = node(args.transport, Path(tmp), 1 << 30 if args.unbounded else args.max_in_flight)
        try:
            report = measure(url, args.seconds, factors, Path(tmp), args.saturated)
        finally:
            report_stop = server.stop()
    report.update(transport=args.transport, admission=not args.unbounded, max_in_flight=args.max_in_flight,
                  stop=report_stop, checks=verdict(report))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"overload-{'unbounded-' if args.unbounded else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"saturated {report['saturated_rps']:,.0f} req/s on {PATH}; unloaded p99 {report['unloaded_p99_ms']} ms")
    for run in report["runs"]:
        print(f"  {run['factor']:g}x ({run['offered_rps']:,.0f} req/s offered): goodput {run['goodput_rps']:,.0f} "
              f"req/s ({run['goodput_share']:.0%}), admitted p99 {run['admitted_latency'].get('p99_ms')} ms, "
              f"refused {run['refused_share']:.0%} (503 p99 {run['refused_latency'].get('p99_ms')} ms), "
              f"back to normal {run.get('recovery_s')} s after the drop "
              f"({run.get('later_windows_over')} later half-second windows over 2x unloaded p99)")
    for check, ok in report["checks"].items():
        print(f"  {'met   ' if ok else 'MISSED'} {check}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
