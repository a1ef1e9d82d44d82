"""Revisions measured (``python -m bench.instances --only reload`` / ``--only canary``): what the
issue's goals for ``spright reload`` and ``spright rollout`` ask, on the Online Boutique.

- reload: the boutique's saturated rate under upstream's mix (``wrk -c32``, bench.load's
  script), then the same mix open loop (bench.mixgen: requests sent at fixed times, latency
  from the scheduled time) at HALF that rate, and ``spright reload`` of every
  function in the middle of it. Per window (before the reload; during it: from the command's
  start to its end plus the drain, ``DRAIN_S``; after), requests, failures and p50/p99.
  Goals: no failed or reset request, p99 during <= 3x p99 before.
- canary: ``spright rollout productcatalog --traffic 10`` (the same module), ``requests`` product
  pages through the gateway (each calls productcatalog, directly and through recommendation),
  then the per-instance counters (spright.ops.nodes.snapshot) of the canary's endpoints
  (node.json revisions, role canary) against the serving ones. Goal: 10 % +- 2 %. Then
  ``--rollback``, and no canary process may be left.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from apps.loadkit import summary
from apps.online_boutique.data import PRODUCTS
from bench.load import run_wrk, write_boutique_script
from bench.procs import Server, alive, cpu_by_pid, descendants, machine_busy_seconds
from spright.ops.nodes import choose_node, snapshot
from spright.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = "apps.online_boutique:app"
CANARY = "productcatalog"  # every page the frontend serves asks it (list_products / get_product)
DRAIN_S = 2.0  # after the reload command returns: the old workers drain (their in-flight work ends)
P99_GOAL = 3.0  # p99 during the reload at most this many times p99 before it
SHARE_GOAL = (10, 2)  # the canary's percent of descriptors, and the tolerance
READY = re.compile(r"spright: (\S+) ready ([0-9.]+) ms after its process's start began")


def _spright(*args: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spright", *args, "--port", str(port)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def _serve(transport: str, port: int, log: Path) -> Server:
    argv = [sys.executable, "-m", "spright", "run", APP, "--port", str(port), "--transport", transport]
    server = Server(argv, [port], log, ROOT)
    server.start()
    return server


def _reload_command(port: int) -> tuple[int, str, float]:
    """``spright reload --port PORT`` (every function): its exit code, output and own CPU
    seconds (the CLI's start is part of what a reload costs the machine)."""
    with tempfile.TemporaryFile() as out:
        command = subprocess.Popen([sys.executable, "-m", "spright", "reload", "--port", str(port)], cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(command.pid, 0)
        out.seek(0)
        said = out.read().decode(errors="replace").strip()
    return os.waitstatus_to_exitcode(status), said, round(usage.ru_utime + usage.ru_stime, 3)


def window(load: dict[str, Any], start_ns: int, end_ns: int) -> dict[str, Any]:
    """The requests of a bench.mixgen run due in [start_ns, end_ns) (CLOCK_MONOTONIC): count,
    failures (an answer >= 400; or none: the connection failed, was reset, or it timed out; 3xx
    are the mix's redirects) and latency from when each was due."""
    lo, hi = (start_ns - load["start_ns"]) / 1e6, (end_ns - load["start_ns"]) / 1e6
    rows = [i for i, due in enumerate(load["due_ms"]) if lo <= due < hi]
    return {"seconds": round((hi - lo) / 1e3, 2), "requests": len(rows),
            "non_2xx": sum(1 for i in rows if load["status"][i] >= 400),
            "connection_errors": sum(1 for i in rows if load["status"][i] == 0),
            **summary([load["latency_ms"][i] / 1e3 for i in rows if load["latency_ms"][i] >= 0])}


async def _reload_under_load(port: int, rate: float, before: float, after: float) -> dict[str, Any]:
    """The mix open loop at ``rate`` (bench.mixgen, a process of its own) for ``before`` s, then
    ``spright reload`` of every function, and on until ``after`` s past the reload's end and drain."""
    duration = before + 5.0 + DRAIN_S + after  # the reload takes ~1 s: slack for a slower one (a busy machine)
    generator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.mixgen", f"http://127.0.0.1:{port}", "--rate", str(rate),
        "--duration", str(duration), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert generator.stdout is not None and generator.stderr is not None
    line = (await generator.stderr.readline()).decode()
    if not line.startswith("start_ns "):
        raise RuntimeError(f"bench.mixgen did not start: {line}{(await generator.stderr.read()).decode()[-800:]}")
    start_ns = int(line.split()[1])
    await asyncio.sleep(max(start_ns / 1e9 + before - time.monotonic(), 0))
    t0 = time.monotonic_ns()
    exit_code, said, command_cpu = await asyncio.get_running_loop().run_in_executor(None, _reload_command, port)
    t1 = time.monotonic_ns()
    out, err = await generator.communicate()
    if generator.returncode != 0:
        raise RuntimeError(f"bench.mixgen exited {generator.returncode}: {err.decode()[-800:]}")
    load = json.loads(out)
    drained = t1 + round(DRAIN_S * 1e9)
    status = load["status"]
    return {
        "rate_rps": round(rate, 1), "duration_s": round(duration, 1), "sent": load["sent"],
        "unfinished": load["unfinished"], "errors": sum(1 for s in status[:load["sent"]] if s == 0 or s >= 400),
        "statuses": {str(s): status[:load["sent"]].count(s) for s in sorted(set(status[:load["sent"]]))},
        "error_samples": load["error_samples"], "connects_in_run": load["connects_in_run"],
        "late_sends": load["late_sends"], "worst_send_lag_ms": load["worst_send_lag_ms"],
        "reload_s": round((t1 - t0) / 1e9, 3), "reload_exit": exit_code, "reload_output": said,
        "reload_command_cpu_s": command_cpu,
        "windows": {"before": window(load, start_ns + 1_000_000_000, t0),  # the first second warms the shoppers' carts
                    "during": window(load, t0, drained),
                    "after": window(load, drained, start_ns + round(duration * 1e9))},
        # per second of the run, from the reload's start (negative: before it): where the tail is
        "p99_by_second_ms": {str(k): window(load, t0 + k * 1_000_000_000, t0 + (k + 1) * 1_000_000_000).get("p99_ms")
                             for k in range(-int(before) + 1, int(duration - before))},
    }


def reload_part(transport: str, workdir: Path, *, saturate_s: float = 5.0, before: float = 10.0,
                after: float = 10.0) -> dict[str, Any]:
    """The boutique's saturated rate (wrk -c32, the mix), then half of it open loop with every
    function reloaded midway (see the module's docstring)."""
    port = free_port()
    server = _serve(transport, port, workdir / f"boutique-reload-{transport}.log")
    try:
        script = write_boutique_script(workdir)
        url = f"http://127.0.0.1:{port}/"
        run_wrk(url, script, 32, 1)  # warm-up
        saturated = run_wrk(url, script, 32, saturate_s)
        old = dict(choose_node(port=port).workers)
        assert server.process is not None
        before_templates = set(_template_pids(server))
        logged = server.log_path.stat().st_size
        busy, started = machine_busy_seconds(), time.monotonic()
        out = asyncio.run(_reload_under_load(port, saturated.rps / 2, before, after))
        # the cores the whole machine kept busy meanwhile (the node, the generator, and anything else
        # on it: more than the node and generator's share means other load skewed the run)
        out["machine_busy_cores"] = round((machine_busy_seconds() - busy) / (time.monotonic() - started), 2)
        node = choose_node(port=port)
        roles = [r["role"] for rows in node.revisions.values() for r in rows]
        # the new revision's template imported the app afresh: its CPU is most of what a reload costs
        templates = cpu_by_pid([pid for pid in _template_pids(server) if pid not in before_templates])
        out.update(template_cpu_s=round(sum(templates.values()), 3),
                   saturated_rps=saturated.rps, saturated_errors=saturated.errors,
                   old_workers_left=[name for name, pid in old.items() if alive(pid)],
                   roles_after=sorted(set(roles)), gateway_responses=snapshot(node)["responses"])
    finally:
        out_stop = server.stop()
    with server.log_path.open("rb") as log:  # the new workers' starts (spright.front.membership)
        log.seek(logged)
        text = log.read().decode(errors="replace")
    out["worker_ready_ms"] = {m[1]: float(m[2]) for m in READY.finditer(text)}
    out["stopped_clean"] = out_stop["clean"]
    return out


async def _product_pages(port: int, requests: int, connections: int = 16) -> dict[str, int]:
    """Exactly ``requests`` GET /product/{id} (random products) on ``connections`` connections:
    their statuses ("exception" for none)."""
    statuses: dict[str, int] = {}
    left = [requests]
    rng = random.Random(1)
    ids = [p["id"] for p in PRODUCTS]

    async def loop(session: aiohttp.ClientSession) -> None:
        while left[0] > 0:
            left[0] -= 1
            try:
                async with session.get(f"http://127.0.0.1:{port}/product/{rng.choice(ids)}") as reply:
                    await reply.read()
                    key = str(reply.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                key = f"exception {type(exc).__name__}"
            statuses[key] = statuses.get(key, 0) + 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(loop(session) for _ in range(connections)))
    return dict(sorted(statuses.items()))


def _received(port: int, function: str) -> dict[int, int]:
    """descriptors_in of each of ``function``'s endpoints, as ``spright stats`` reads them."""
    entry = next(f for f in snapshot(choose_node(port=port))["functions"] if f["name"] == function)
    return {row["endpoint"]: row["descriptors_in"] for row in entry.get("instances", [])}


def _template_pids(server: Server) -> list[int]:
    """The node's template processes (spright.node.template), one per revision alive."""
    assert server.process is not None
    ours = set(descendants(server.process.pid))
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines()
            if int(line.split()[0]) in ours and "spright: template [" in line]


def _worker_pids(function: str, server: Server) -> list[int]:
    """What ``ps`` shows of ``function``'s worker processes under ``server`` (its node's)."""
    assert server.process is not None
    ours = set(descendants(server.process.pid))
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines()
            if int(line.split()[0]) in ours and re.search(rf"spright: worker {function}(#\d+)? \[", line)]


def canary_part(transport: str, workdir: Path, requests: int = 10_000, share: int = SHARE_GOAL[0]) -> dict[str, Any]:
    """A canary of productcatalog (the same module) at ``share`` percent, ``requests`` product
    pages, the canary's share of productcatalog's descriptors; then a rollback."""
    port = free_port()
    server = _serve(transport, port, workdir / f"boutique-canary-{transport}.log")
    try:
        stable_pids = _worker_pids(CANARY, server)
        started = time.perf_counter()
        rollout = _spright("rollout", CANARY, "--traffic", str(share), port=port)
        rollout_s = time.perf_counter() - started
        if rollout.returncode != 0:
            raise RuntimeError(f"spright rollout failed: {rollout.stdout}{rollout.stderr}")
        revisions = choose_node(port=port).revisions[CANARY]
        groups = {role: [e for r in revisions if r["role"] == role for e in r["endpoints"][CANARY]]
                  for role in ("serving", "canary")}
        canary_pids = [pid for pid in _worker_pids(CANARY, server) if pid not in stable_pids]
        counted = _received(port, CANARY)
        statuses = asyncio.run(_product_pages(port, requests))
        after = _received(port, CANARY)
        got = {role: sum(after.get(e, 0) - counted.get(e, 0) for e in endpoints) for role, endpoints in groups.items()}
        rolled_back = time.monotonic()
        rollback = _spright("rollout", CANARY, "--rollback", port=port)
        deadline = rolled_back + 15  # the canary drains, then exits, and node.json forgets its revision

        def roles() -> list[str]:
            return sorted({r["role"] for r in choose_node(port=port).revisions[CANARY]})

        while (any(alive(pid) for pid in canary_pids) or roles() != ["serving"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        gone_s = time.monotonic() - rolled_back
        left = [pid for pid in _worker_pids(CANARY, server) if pid not in stable_pids]
        roles_after = roles()
    finally:
        server.stop()
    total = sum(got.values())
    return {"function": CANARY, "share": share, "requests": requests, "statuses": statuses,
            "endpoints": groups, "descriptors": got,
            "canary_percent": round(100 * got["canary"] / total, 2) if total else None,
            "rollout_s": round(rollout_s, 3), "canary_pids": canary_pids, "rollback_exit": rollback.returncode,
            "rollback_output": (rollback.stdout + rollback.stderr).strip(),
            "canary_processes_left": left, "roles_after_rollback": roles_after,
            "rollback_to_gone_s": round(gone_s, 3)}


def reload_goals(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The worst round of the reload part against its goals: the summary and its lines."""
    failed = max(r["errors"] + sum(w["non_2xx"] + w["connection_errors"] for w in r["windows"].values())
                 for r in runs)
    ratio = max(r["windows"]["during"]["p99_ms"] / r["windows"]["before"]["p99_ms"] for r in runs)
    worst = max(runs, key=lambda r: r["windows"]["during"]["p99_ms"] / r["windows"]["before"]["p99_ms"])
    ready = [ms for r in runs for ms in r["worker_ready_ms"].values()]
    out = {"failed_requests": failed, "p99_ratio": round(ratio, 2), "reload_s": max(r["reload_s"] for r in runs),
           "worker_ready_ms_max": max(ready, default=None),
           "goal_no_failures": failed == 0, "goal_p99": ratio <= P99_GOAL}
    before, during = worst["windows"]["before"], worst["windows"]["during"]
    lines = [f"reload of all 10 boutique functions under the mix at {worst['rate_rps']:,} req/s (half of "
             f"{worst['saturated_rps']:,} saturated): {worst['sent']:,} requests, {failed} failed or reset "
             f"({'met' if failed == 0 else 'MISSED'}: 0)",
             f"  p50/p99 before {before['p50_ms']}/{before['p99_ms']} ms, during {during['p50_ms']}/"
             f"{during['p99_ms']} ms: p99 {ratio:.2f}x ({'met' if ratio <= P99_GOAL else 'MISSED'}: <= {P99_GOAL:g}x); "
             f"the reload took {out['reload_s']} s, a new worker ready in <= {out['worker_ready_ms_max']} ms; "
             f"the new template's CPU {worst.get('template_cpu_s')} s, the command's "
             f"{worst.get('reload_command_cpu_s')} s "
             f"(the machine {worst.get('machine_busy_cores')} cores busy)"]
    return out, lines


def canary_goals(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Every round of the canary part against its goals."""
    target, slack = SHARE_GOAL
    percents = [r["canary_percent"] for r in runs]
    share_met = all(p is not None and abs(p - target) <= slack for p in percents)
    left = [pid for r in runs for pid in r["canary_processes_left"]]
    out = {"canary_percent": percents, "goal_share": share_met, "goal_rollback_clean": not left}
    lines = [f"canary of {CANARY} at --traffic {target}: {', '.join(f'{p}%' for p in percents)} of its descriptors "
             f"({'met' if share_met else 'MISSED'}: {target} +- {slack}%); after --rollback "
             f"{len(left)} canary processes left ({'met' if not left else 'MISSED'}: 0)"]
    return out, lines
