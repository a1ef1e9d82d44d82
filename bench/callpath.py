"""What a real app pays per ``ctx.call``, before and after a change, in one run.

Scenarios, each on a fresh node (skmsg unless ``--transport``):
- ``calls``: ``bench.apps:calls`` under ``wrk -c32`` at 0 and 8 sequential ``ctx.call``s per
  request; a call's round trip between two worker processes costs
  (CPU per request at 8 - at 0) / 8, every process of the node counted;
- ``product``: Online Boutique's product page (``GET /product/{id}``, upstream's most frequent
  request) under ``wrk -c32``: RPS and CPU per request, per process;
- ``mix``: upstream's whole request mix (``bench.load``'s wrk script, as ``make bench``'s fig 9)
  under ``wrk -c32``: RPS and CPU per request;
- ``noop``, ``echo3``: ``bench.apps``' one function and three-hop chain (64 B POST) under ``wrk -c32``;
- ``raw``: the bare uvloop+httptools server (``bench.raw_server``) under the same ``wrk -c32``:
  its CPU per request is the floor, and the summary gives product's and mix's as multiples of it
  (``x_raw_cpu``, measured in the same run).

``--against DIR`` runs every scenario on another checkout too (e.g. ``git worktree add
/tmp/before <commit>``, with this ``bench/apps.py`` copied in), alternating the two so that the
machine's drift hits both alike, and reports after/before ratios.
``python -m bench.callpath [--against DIR] [--duration 8] [--rounds 2] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.load import run_wrk, write_boutique_script, write_script
from bench.procs import Server, free_ports

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = "/product/OLJCESPC7Z"
console = Console(stderr=True)


def node(checkout: Path, app: str, transport: str, workdir: Path) -> tuple[Server, str]:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "spright", "run", app, "--port", str(port), "--transport", transport]
    server = Server(argv, [port], workdir / f"{app.replace(':', '-')}-{port}.log", checkout)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def cpu_per_request(server: Server, requests: int, before: dict[int, float]) -> tuple[float, dict[str, float]]:
    after = server.cpu()
    per_pid = {pid: after.get(pid, 0.0) - before.get(pid, 0.0) for pid in server.pids}
    return sum(per_pid.values()) / max(requests, 1) * 1e6, {str(p): round(c, 2) for p, c in per_pid.items()}


def wrk_scenario(server: Server, url: str, duration: float, workdir: Path, method: str = "GET",
                 body: bytes | None = None) -> dict[str, Any]:
    script = write_script(method, body, workdir)
    run_wrk(url, script, 32, 2)  # warm-up
    before = server.cpu()
    load = run_wrk(url, script, 32, duration)
    cpu, per_pid = cpu_per_request(server, load.requests, before)
    if sum(load.errors.values()):
        raise RuntimeError(f"wrk saw errors: {load.errors}")
    return {"rps": load.rps, "cpu_us": round(cpu, 1), "p50_us": load.p50_us, "p99_us": load.p99_us,
            "cpu_s_by_pid": per_pid}


def calls(checkout: Path, transport: str, duration: float, workdir: Path) -> dict[str, Any]:
    server, url = node(checkout, "bench.apps:calls", transport, workdir)
    try:
        at0 = wrk_scenario(server, f"{url}/calls/0", duration, workdir)
        at8 = wrk_scenario(server, f"{url}/calls/8", duration, workdir)
    finally:
        server.stop()
    return {"at0": at0, "at8": at8, "cpu_us_per_call": round((at8["cpu_us"] - at0["cpu_us"]) / 8, 1)}


def product(checkout: Path, transport: str, duration: float, workdir: Path) -> dict[str, Any]:
    server, url = node(checkout, "apps.online_boutique:app", transport, workdir)
    try:
        return wrk_scenario(server, url + PRODUCT, duration, workdir)
    finally:
        server.stop()


def mix(checkout: Path, transport: str, duration: float, workdir: Path) -> dict[str, Any]:
    server, url = node(checkout, "apps.online_boutique:app", transport, workdir)
    try:
        script = write_boutique_script(workdir)
        run_wrk(url + "/", script, 32, 2)  # warm-up
        before = server.cpu()
        load = run_wrk(url + "/", script, 32, duration)
        cpu, _ = cpu_per_request(server, load.requests, before)
        return {"rps": load.rps, "cpu_us": round(cpu, 1), "errors": sum(load.errors.values()),
                "p50_us": load.p50_us, "p99_us": load.p99_us}
    finally:
        server.stop()


def small(app: str, method: str, body: bytes | None) -> Callable[[Path, str, float, Path], dict[str, Any]]:
    """A scenario of ``bench.apps``' small chains: the framework's cost per request and hop."""
    def scenario(checkout: Path, transport: str, duration: float, workdir: Path) -> dict[str, Any]:
        server, url = node(checkout, app, transport, workdir)
        try:
            return wrk_scenario(server, url + "/", duration, workdir, method, body)
        finally:
            server.stop()
    return scenario


def raw(checkout: Path, transport: str, duration: float, workdir: Path) -> dict[str, Any]:
    """The bare server: no framework, one process (the same for every checkout)."""
    (port,) = free_ports(1)
    server = Server([sys.executable, "-m", "bench.raw_server", str(port)], [port], workdir / f"raw-{port}.log", ROOT)
    server.start()
    try:
        return wrk_scenario(server, f"http://127.0.0.1:{port}/", duration, workdir)
    finally:
        server.stop()


SCENARIOS = {"calls": calls, "product": product, "mix": mix, "raw": raw,
             "noop": small("bench.apps:noop", "GET", None), "echo3": small("bench.apps:echo3", "POST", b"x" * 64)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.callpath", description=__doc__.split("\n")[0])
    p.add_argument("--against", type=Path, default=None, help="another checkout to compare with (the 'before')")
    p.add_argument("--transport", default="skmsg")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of load per measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternations of before and after")
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = p.parse_args(argv)
    checkouts = {"after": ROOT} | ({"before": args.against.resolve()} if args.against else {})
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {c: [] for c in checkouts} for n in args.only.split(",")}
    with tempfile.TemporaryDirectory(prefix="spright-callpath-") as tmp:
        for round_ in range(args.rounds):
            for name in runs:
                for label, checkout in (checkouts.items() if round_ % 2 == 0 else reversed(checkouts.items())):
                    console.log(f"round {round_ + 1}: {name} [{label}]")
                    runs[name][label].append(SCENARIOS[name](checkout, args.transport, args.duration, Path(tmp)))
    report = {"transport": args.transport, "duration_s": args.duration, "rounds": args.rounds,
              "checkouts": {k: str(v) for k, v in checkouts.items()}, "runs": runs, "summary": summarize(runs)}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(report["summary"], indent=2))


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians per scenario and checkout; with two checkouts, after/before ratios."""
    out: dict[str, Any] = {}
    for name, by_checkout in runs.items():
        key = "cpu_us_per_call" if name == "calls" else "rps"
        figures = {}
        for label, results in by_checkout.items():
            figures[label] = {key: statistics.median(r[key] for r in results)}
            if name != "calls":
                figures[label]["cpu_us"] = statistics.median(r["cpu_us"] for r in results)
        if "raw" in runs and name in ("product", "mix"):
            for label in by_checkout:
                floor = statistics.median(r["cpu_us"] for r in runs["raw"][label])
                figures[label]["x_raw_cpu"] = round(figures[label]["cpu_us"] / floor, 1) if floor else None
        if "before" in figures:
            figures["ratio"] = {k: round(figures["after"][k] / figures["before"][k], 2) for k in figures["after"]
                                if figures["before"][k] and figures["after"][k] is not None}
        out[name] = figures
    return out


if __name__ == "__main__":
    started = time.monotonic()
    main()
    console.log(f"done in {time.monotonic() - started:.0f} s")
