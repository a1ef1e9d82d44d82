"""The low-load tail (issue 24): echo3 on skmsg at 10% of its saturated rate, open loop, with the
generator first shown clean against the bare uvloop server at the same rate.

    python -m bench.tail                       # rate from a wrk saturation of echo3, 10 s per run
    python -m bench.tail --rate 4000 --rounds 3 --aiohttp

Each round measures the raw server then each node variant, one after the other, so drift of the
machine lands on all of them alike. ``--aiohttp`` also runs ``bench.openloop.single`` (the
generator ``bench.paper`` uses) against the raw server, to show what the old instrument adds.
``--variant NAME:KEY=VALUE,...`` adds a node started with those environment variables (an A/B of
a node setting). Before every measurement it waits (up to ``--patience`` seconds) for the 1-minute
load average to drop under ``--max-load``, and stores the load beside each figure.
Writes ``bench/results/tail-<stamp>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import openloop, tailgen
from bench.load import run_wrk, write_script
from bench.paper import ECHO_BODY, bounded
from bench.procs import Server, free_ports

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
APP = "bench.apps:echo3"


def quiet(max_load: float, patience: float) -> float:
    """Wait (polling every 30 s, at most ``patience`` s) for the machine to calm; the 1-minute load."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        print(f"  load {os.getloadavg()[0]:.2f} > {max_load}: waiting", file=sys.stderr, flush=True)
        time.sleep(30)
    return round(os.getloadavg()[0], 2)


def floor(rate: float) -> dict[str, Any]:
    """The machine's timer wake-up lag at ``rate`` for 2 s (``bench.tailgen --floor``)."""
    argv = [PYTHON, "-m", "bench.tailgen", "-", "--floor", "--rate", str(rate), "--duration", "2"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def aiohttp_gen(url: str, rate: float, duration: float, body: bytes | None) -> dict[str, Any]:
    """One run of ``bench.openloop.single``, in this process as ``bench.paper`` runs it."""
    method = "GET" if body is None else "POST"
    return bounded(openloop.single(url, method, "/", body, rate, duration), duration + 30)


def node(env: dict[str, str], workdir: Path, name: str) -> tuple[Server, str]:
    (port,) = free_ports(1)
    argv = [PYTHON, "-m", "spright", "run", APP, "--transport", "skmsg", "--port", str(port)]
    server = Server(argv, [port], workdir / f"{name}.log", ROOT)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # Server starts the node from this process's environment
    try:
        server.start(timeout=60)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return server, f"http://127.0.0.1:{port}"


def raw(workdir: Path) -> tuple[Server, str]:
    (port,) = free_ports(1)
    server = Server([PYTHON, "-m", "bench.raw_server", str(port)], [port], workdir / "raw.log", ROOT)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def row(name: str, run: dict[str, Any]) -> str:
    if "error" in run:
        return f"{name:<12} error: {run['error']}"
    if "wakeups" in run:
        lag = run["lag"]
        return (f"{name:<12} load {run['load_1m']:>4}  wake-up lag p50 {lag['p50_ms']:.3f}  p99 {lag['p99_ms']:.3f}"
                f"  p99.9 {lag['p99.9_ms']:.3f} ms  late {run['late']} of {run['wakeups']}")
    lat, lag = run.get("latency", {}), run.get("send_lag", {})
    lag_s = f"lag p99 {lag['p99_ms']:.3f} late {run['late_sends']}" if lag else \
        f"worst lag {run.get('worst_send_lag_ms')}"
    ratio = lat["p99_ms"] / lat["p50_ms"] if lat.get("p50_ms") else float("nan")  # the goal: at most 3
    svc = run.get("service", {})
    from_send = f"  from send p50 {svc['p50_ms']:.3f} p99 {svc['p99_ms']:.3f}" if svc else ""
    return (f"{name:<12} load {run['load_1m']:>4}  p50 {lat.get('p50_ms', 0):7.3f}  p99 {lat.get('p99_ms', 0):7.3f}  "
            f"p99.9 {lat.get('p99.9_ms', float('nan')):7.3f} ms  p99/p50 {ratio:5.1f}  errors {run.get('errors')}  "
            f"{lag_s}{from_send}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=None, help="req/s; default 10%% of echo3's saturated RPS")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each open-loop run")
    parser.add_argument("--saturate-s", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--aiohttp", action="store_true", help="also run bench.openloop's generator on raw")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--patience", type=float, default=300.0)
    return parser.parse_args(argv)


def variants(specs: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"node": {}}
    for spec in specs:
        name, _, pairs = spec.partition(":")
        out[name] = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    return out


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    nodes = variants(args.variant)
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cores": os.cpu_count(), "app": APP,
                           "transport": "skmsg", "duration_s": args.duration, "body_bytes": len(ECHO_BODY),
                           "variants": nodes, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rate = args.rate
        if rate is None:
            server, url = node({}, workdir, "saturate")
            try:
                script = write_script("POST", ECHO_BODY, workdir)
                run_wrk(url + "/", script, 64, 1)  # warm-up
                load = quiet(args.max_load, args.patience)
                saturated = run_wrk(url + "/", script, 64, args.saturate_s)
            finally:
                server.stop()
            rate = round(saturated.rps / 10, 1)
            doc["saturated"] = {**saturated.to_dict(), "load_1m": load}
        doc["rate"] = rate
        print(f"rate {rate} req/s", file=sys.stderr)
        for index in range(args.rounds):
            results: dict[str, Any] = {"floor": {"load_1m": quiet(args.max_load, args.patience), **floor(rate)}}
            server, url = raw(workdir)
            try:
                results["raw"] = {"load_1m": quiet(args.max_load, args.patience),
                                  **tailgen.measure(url, rate, args.duration, None)}
                if args.aiohttp:
                    results["raw-aiohttp"] = {"load_1m": quiet(args.max_load, args.patience),
                                              **aiohttp_gen(url, rate, args.duration, None)}
            finally:
                server.stop()
            for name, env in nodes.items():
                server, url = node(env, workdir, name)
                try:
                    tailgen.measure(url, rate, 1.0, ECHO_BODY)  # warm-up: connections, first-call paths
                    results[name] = {"load_1m": quiet(args.max_load, args.patience),
                                     **tailgen.measure(url, rate, args.duration, ECHO_BODY)}
                finally:
                    server.stop()
            for name, run in results.items():
                print(f"round {index + 1}  " + row(name, run), file=sys.stderr, flush=True)
            doc["rounds"].append(results)
    path = RESULTS / f"tail-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(path)
    return path


if __name__ == "__main__":
    main()
