"""Soak: the Online Boutique mix for minutes on one node, then the checks that catch slow leaks.

``python -m bench.soak [--minutes 10] [--transport auto] [--out FILE]`` (``make soak``):
measures the node's saturated rate with wrk for a few seconds, then drives upstream's request mix
closed-loop with as few connections as it takes to stay near 80% of it, and samples every
process of the node (RSS, open file descriptors) as it goes. It passes when: no request failed
(a 5xx, or no answer), every pool slot came back, the node's file descriptors and shared-memory
segments are what they were after warm-up, RSS grew less than 10% after warm-up, and the node
stopped clean. Writes its report (JSON) to ``bench/results/soak-<stamp>.json``; exits 1 on a
failed check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.load import run_wrk, write_boutique_script
from bench.procs import Server, descendants, free_ports
from spright.host.nodefile import runtime_base
from spright.testing import node_metric

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
console = Console(stderr=True)


def sample(pids: list[int]) -> dict[str, int]:
    """RSS (KiB) and open descriptors of the node's processes, summed."""
    rss = fds = 0
    for pid in pids:
        try:
            rss += int(re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))  # type: ignore[union-attr]
            fds += len(list(Path(f"/proc/{pid}/fd").iterdir()))
        except (OSError, AttributeError):
            continue
    return {"rss_kib": rss, "fds": fds}


SERVER_ERRORS = 'spright_responses_total{status="5xx"}'


def segments(node_pid: int) -> set[str]:
    """The shared-memory segments of the node (those sharing a prefix with the ones its node.json names)."""
    named = json.loads((runtime_base() / str(node_pid) / "node.json").read_text())["shm"]
    prefixes = {name.rsplit("-", 1)[0] + "-" for name in named}
    return {p.name for p in Path("/dev/shm").iterdir() if any(p.name.startswith(x) for x in prefixes)}


def soak(minutes: float, transport: str, workdir: Path) -> dict[str, Any]:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "spright", "run", "apps.online_boutique:app", "--port", str(port),
            "--transport", transport]
    server = Server(argv, [port], workdir / "soak-node.log", ROOT)
    server.start()
    assert server.process is not None
    script = write_boutique_script(workdir)
    report: dict[str, Any] = {"command": argv, "minutes": minutes}
    try:
        saturated = run_wrk(url + "/", script, 64, 5)
        connections = 2
        while connections < 64:  # the fewest connections that reach 80% of saturation
            probe = run_wrk(url + "/", script, connections, 3)
            if probe.rps >= 0.8 * saturated.rps:
                break
            connections *= 2
        report.update(saturated_rps=saturated.rps, connections=connections)
        time.sleep(1)
        pids = descendants(server.process.pid)
        before, shm_before = sample(pids), segments(server.process.pid)
        failed_before = node_metric(port, SERVER_ERRORS)
        report["after_warm_up"] = before
        console.log(f"soak: {minutes:g} min at -c{connections} (~{probe.rps:,.0f} of {saturated.rps:,.0f} req/s)")
        timeline, load, left = [], [], minutes * 60
        while left > 0:
            step = min(30.0, left)
            load.append(run_wrk(url + "/", script, connections, step, timeout_s=10).to_dict())
            timeline.append({"t_s": round(minutes * 60 - left + step), **sample(pids)})
            left -= step
        report.update(load=load, timeline=timeline)
        time.sleep(12)  # failed requests' slots are kept for Config.grace (10 s) before they are swept
        after = sample(pids)
        requests = sum(run["requests"] for run in load)
        # 4xx are the load's own (a checkout whose cart another connection has just emptied):
        # failures are the node's 5xx and requests that got no answer
        server_errors = int(node_metric(port, SERVER_ERRORS) - failed_before)
        errors = server_errors + sum(run["errors"]["timeout"] for run in load)
        report["client_errors"] = sum(run["errors"]["status"] for run in load) - server_errors
        checks = {
            "no request failed (5xx, timeout)": errors == 0,
            "every slot came back": node_metric(port, "spright_pool_slots_in_use") == 0,
            "file descriptors as after warm-up": after["fds"] <= before["fds"] + 2,
            "RSS grew under 10% after warm-up": after["rss_kib"] < 1.10 * before["rss_kib"],
            "segments as after warm-up": segments(server.process.pid) == shm_before,
        }
        report.update(requests=requests, errors=errors, after=after, rps=round(requests / (minutes * 60), 1))
    finally:
        report["stop"] = server.stop()
    left = {name for name in shm_before if Path("/dev/shm", name).exists()}
    checks["the node stopped clean"] = bool(report["stop"]["clean"]) and not left
    report["checks"] = checks
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--transport", default="auto")
    p.add_argument("--out", type=Path, default=None, help="report file (default bench/results/soak-<stamp>.json)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spright-soak-") as tmp:
        report = soak(args.minutes, args.transport, Path(tmp))
    out = args.out or RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for check, passed in report["checks"].items():
        console.log(f"{'[green]pass' if passed else '[red]FAIL'}[/] {check}")
    console.log(f"{report.get('requests', 0):,} requests, {report.get('errors', 0)} errors; report: {out}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
