"""The SPRIGHT paper's comparison figures, measured on this machine, one data plane at a time.

``python -m bench.paper [--quick] [--planes skmsg,poll,...] [--out DIR]`` runs, sequentially (two
cores: never two servers at once), each phase against a fresh ``spright run`` per data plane:

- fig 9: Online Boutique requests per second at saturation (wrk, closed loop, upstream's mix);
- fig 10: Online Boutique at one offered open-loop rate for every plane (half of knative's fig 9
  rate, or of the slowest plane's without knative): latency CDF per request kind, CPU over time;
- fig 11: motion, the shipped sparse trace replayed at speed, then the node's CPU while idle;
- fig 12: parking, upstream's bursts of photo POSTs;
- echo3: saturated RPS (wrk) and CPU per request at 10% of skmsg's rate (open loop);
- sweep: latency by chain length (1..10) and by payload (1 KB..1 MB through 5 hops).

A data plane whose node does not start is "skipped" with the reason from its log, in every
phase; a phase that errs or overruns its bound is recorded as such. Results go to
``bench/results/<stamp>/`` (results.json, summary.md, PNGs), refreshed in ``bench/results/latest/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from apps.motion.replay import replay
from apps.motion.trace import load as load_trace
from apps.parking import load as parking_load
from bench import figures, openloop, sweep, tailgen
from bench.load import run_wrk, write_boutique_script, write_script
from bench.openloop import CpuSampler
from bench.procs import Server, free_ports
from bench.run import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
# Every data plane, as `spright run` options: the only place that names them.
PLANES: dict[str, list[str]] = {
    "skmsg": ["--transport", "skmsg"],
    "poll": ["--transport", "poll"],
    "poll-adaptive": ["--transport", "poll", "--poll-idle-us", "100"],
    # the paper's Knative: every hop through the ingress (nginx here, Istio's Envoy there), then the
    # callee's queue-proxy; the ratios against knative use this one. Its callers, as Knative's, use
    # several connections per destination (one would make each hop wait for the one before:
    # spright/transport/http.py)
    "knative": ["--transport", "http", "--sidecar", "--ingress", "--ingress-connections", "8"],
    "knative-sidecar": ["--transport", "http", "--sidecar"],  # the queue-proxies only: the gateway is the ingress
    "grpc": ["--transport", "grpc"],
    "http": ["--transport", "http"],
    "unix": ["--transport", "unix"],
}
DEFAULT_PLANES = {"quick": ["skmsg", "poll", "knative", "knative-sidecar", "grpc"],
                  "full": ["skmsg", "poll", "poll-adaptive", "knative", "knative-sidecar", "grpc", "http"]}
# Quick runs put the boutique's and the sweep's eleven processes on adaptive polling: spinning, they
# share two cores and a phase takes half a minute (the full run measures both).
QUICK_SUBSTITUTES = {"poll": "poll-adaptive"}
ECHO_BODY = b"x" * 64
console = Console(stderr=True)


@dataclass(frozen=True)
class Scale:
    """Seconds and counts of every phase (``--quick``, then times ``--scale``)."""

    users: int = 64  # wrk connections driving the boutique mix (fig 9)
    saturate_s: float = 10.0
    open_s: float = 10.0
    idle_s: float = 5.0
    motion_s: float = 30.0
    burst: int = 164
    bursts: int = 2
    every_s: float = 12.0
    wrk_s: float = 5.0
    echo_open_s: float = 5.0
    sweep_requests: int = 100

    @classmethod
    def make(cls, quick: bool, factor: float) -> Scale:
        base = cls(32, 3.0, 3.0, 2.0, 8.0, 16, 2, 1.5, 2.0, 1.5, 20) if quick else cls()

        def scaled(value: float, least: float) -> float:
            return max(round(value * factor, 2), least)

        return cls(max(round(base.users * factor), 4), scaled(base.saturate_s, 1), scaled(base.open_s, 1),
                   scaled(base.idle_s, 0.5), scaled(base.motion_s, 1), int(scaled(base.burst, 2)), base.bursts,
                   scaled(base.every_s, 0.5), float(round(scaled(base.wrk_s, 1))), scaled(base.echo_open_s, 1),
                   int(scaled(base.sweep_requests, 10)))


def bounded(coroutine: Coroutine[Any, Any, dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Run a load coroutine, giving up after ``seconds``: a stalled plane must not hang the run."""
    try:
        return asyncio.run(asyncio.wait_for(coroutine, seconds))
    except TimeoutError:
        return {"error": f"timed out after {seconds:.0f} s"}


class Harness:
    """Starts one node at a time and records what each phase measured on it."""

    def __init__(self, planes: list[str], scale: Scale, quick: bool, workdir: Path, progress: Progress) -> None:
        self.planes, self.scale, self.quick, self.workdir, self.progress = planes, scale, quick, workdir, progress
        self.commands: list[list[str]] = []
        self.unavailable: dict[str, str] = {}  # plane -> why its node does not start at all
        self.task = progress.add_task("starting", total=len(planes) * 5)

    def on(self, phase: str, plane: str, app: str, body: Callable[[Server, str], dict[str, Any]],
           args: list[str] | None = None) -> dict[str, Any]:
        """``body(server, url)`` against a fresh node of ``app`` on ``plane``; never raises."""
        self.progress.update(self.task, description=f"{phase}: {plane}")
        if plane in self.unavailable:
            return {"skipped": self.unavailable[plane]}
        (port,) = free_ports(1)
        argv = [PYTHON, "-m", "spright", "run", app, "--port", str(port), *(args or PLANES[plane])]
        self.commands.append(argv)
        server = Server(argv, [port], self.workdir / f"{phase}-{plane}.log", ROOT)
        result: dict[str, Any] = {"command": argv}
        began = time.monotonic()
        try:
            server.start(timeout=60)
        except RuntimeError as exc:
            exited, reason = "server exited" in str(exc), str(exc)
            if exited:  # the log's last error, its lines joined (the CLI wraps them at the terminal width)
                lines = server.tail(10).strip().splitlines()
                first = max((i for i, line in enumerate(lines) if "error" in line.lower()), default=len(lines) - 1)
                reason = " ".join(line.strip() for line in lines[first:]) or reason
            if exited:
                self.unavailable[plane] = reason
            console.log(f"[yellow]{phase} {plane}: skipped: {reason}")
            return {**result, "skipped": reason, "stop": server.stop()}
        try:
            result.update(body(server, f"http://127.0.0.1:{port}"))
        except Exception as exc:  # one broken plane must not lose the other planes' figures
            result["error"] = f"{type(exc).__name__}: {exc}"
        result["processes"] = len(server.pids)
        result["stop"] = server.stop()
        result["seconds"] = round(time.monotonic() - began, 1)
        console.log(f"{phase} {plane}: {result['seconds']:.0f} s")
        if not result["stop"]["clean"]:
            result.setdefault("error", f"stop not clean: killed {result['stop']['killed']}")
        if "error" in result:
            result["log_tail"] = server.tail()
            console.log(f"[red]{phase} {plane}: {result['error']}")
        return result

    def step(self) -> None:
        self.progress.advance(self.task)

    def substituted(self) -> dict[str, str]:
        """Planes that the boutique and the sweep run as another (quick runs only)."""
        return {p: QUICK_SUBSTITUTES[p] for p in self.planes if self.quick and p in QUICK_SUBSTITUTES}

    def args(self, plane: str) -> list[str]:
        return PLANES[self.substituted().get(plane, plane)]

    # fig 9 and 10 ------------------------------------------------------------------------------
    def boutique(self) -> dict[str, Any]:
        s = self.scale
        ref = "knative" if "knative" in self.planes else None
        order = sorted(self.planes, key=lambda p: p != ref)
        fig9: dict[str, Any] = {}
        fig10: dict[str, Any] = {"runs": {}}

        script = write_boutique_script(self.workdir)

        def saturate(server: Server, url: str) -> dict[str, Any]:
            """wrk (C, one core) drives the mix: a Python client would saturate before the fast planes."""
            run_wrk(url + "/", script, s.users, 1)  # warm-up
            assert server.process is not None
            with CpuSampler(server.process.pid) as cpu:
                load = run_wrk(url + "/", script, s.users, s.saturate_s, timeout_s=30)
            errors = sum(load.errors.values())
            return {**load.to_dict(), "errors": errors, "error_kinds": load.errors, "cpu": cpu.result(load.requests)}

        def offered(server: Server, url: str) -> dict[str, Any]:
            assert server.process is not None
            with CpuSampler(server.process.pid) as cpu:
                out = bounded(openloop.boutique(url, fig10["rate"], s.open_s, grace=15), s.open_s + 30)
            return {**out, "cpu": cpu.result(out.get("requests"))}

        def both(server: Server, url: str) -> dict[str, Any]:
            out = saturate(server, url)
            if out.get("rps"):
                fig10["rate"], fig10["rate_from"] = out["rps"] / 2, f"half of {ref}'s saturated RPS"
                fig10["runs"][ref] = offered(server, url)
            return out

        for plane in order:
            fig9[plane] = self.on("fig9", plane, "apps.online_boutique:app", both if plane == ref else saturate,
                                  self.args(plane))
            self.step()
        if "rate" not in fig10:  # no knative: half of the slowest plane's rate, on fresh nodes
            measured = {p: r["rps"] for p, r in fig9.items() if r.get("rps")}
            if measured:
                slowest = min(measured, key=measured.__getitem__)
                fig10["rate"], fig10["rate_from"] = measured[slowest] / 2, f"half of {slowest}'s saturated RPS"
        for plane in order:
            if plane not in fig10["runs"]:
                fig10["runs"][plane] = (self.on("fig10", plane, "apps.online_boutique:app", offered, self.args(plane))
                                        if "rate" in fig10 or plane in self.unavailable
                                        else {"skipped": "no plane reached saturation in fig 9"})
        substituted = self.substituted()
        return {"fig9": {"runs": fig9, "users": s.users, "seconds": s.saturate_s, "substituted": substituted},
                "fig10": {**fig10, "seconds": s.open_s, "substituted": substituted}}

    # fig 11 ------------------------------------------------------------------------------------
    def motion(self) -> dict[str, Any]:
        detections = load_trace()
        speed = (detections[-1].start - detections[0].start) / self.scale.motion_s

        def body(server: Server, url: str) -> dict[str, Any]:
            assert server.process is not None
            with CpuSampler(server.process.pid) as cpu:
                out = bounded(replay(url, detections, speed, self.scale.motion_s + 5), self.scale.motion_s + 40)
            with CpuSampler(server.process.pid) as idle:  # after the trace: warm, and nothing to do
                time.sleep(self.scale.idle_s)
            records = out.pop("records", [])
            latencies = [r["latency_s"] for r in records]
            bad = sum(1 for r in records if r["status"] >= 400)
            return {**out, "errors": bad, "cdf_ms": openloop.cdf(latencies), "idle": idle.result(),
                    "cpu": cpu.result(out.get("requests"))}

        runs = {}
        for plane in self.planes:
            runs[plane] = self.on("fig11", plane, "apps.motion:app", body)
            self.step()
        return {"runs": runs, "speed": round(speed, 2), "seconds": self.scale.motion_s, "idle_s": self.scale.idle_s}

    # fig 12 ------------------------------------------------------------------------------------
    def parking(self) -> dict[str, Any]:
        s = self.scale

        def body(server: Server, url: str) -> dict[str, Any]:
            assert server.process is not None
            with CpuSampler(server.process.pid) as cpu:
                out = bounded(parking_load.run(url, s.burst, s.every_s, s.bursts, photos=8),
                              s.every_s * s.bursts + 200)
            return {**out, "cpu": cpu.result(out.get("requests"))}

        runs = {}
        for plane in self.planes:
            runs[plane] = self.on("fig12", plane, "apps.parking:app", body)
            self.step()
        return {"runs": runs, "burst": s.burst, "bursts": s.bursts, "every_s": s.every_s}

    # echo3 -------------------------------------------------------------------------------------
    def echo3(self) -> dict[str, Any]:
        s = self.scale
        script = write_script("POST", ECHO_BODY, self.workdir)
        order = sorted(self.planes, key=lambda p: p != "skmsg")  # skmsg's rate sets the low load
        low: dict[str, Any] = {}

        def body(server: Server, url: str) -> dict[str, Any]:
            run_wrk(url + "/", script, 64, 1)  # warm-up
            saturated = run_wrk(url + "/", script, 64, s.wrk_s)
            low.setdefault("rate", saturated.rps / 10)
            assert server.process is not None
            with CpuSampler(server.process.pid) as cpu:  # the clean generator: its own process (bench.tail)
                out = tailgen.measure(url, low["rate"], s.echo_open_s, ECHO_BODY)
            return {"saturated": saturated.to_dict(), "low_load": {**out, "cpu": cpu.result(out.get("requests"))}}

        runs = {}
        for plane in order:
            runs[plane] = self.on("echo3", plane, "bench.apps:echo3", body)
            if "rate" in low:
                low.setdefault("rate_from", f"10% of {plane}'s saturated RPS")
            self.step()
        return {"runs": runs, **low, "body_bytes": len(ECHO_BODY), "seconds": s.wrk_s}

    # sweep -------------------------------------------------------------------------------------
    def sweep(self) -> dict[str, Any]:
        requests, bound = self.scale.sweep_requests, 60.0 if self.quick else 120.0
        small = os.urandom(64)

        def body(server: Server, url: str) -> dict[str, Any]:
            port, deadline = int(url.rsplit(":", 1)[1]), time.monotonic() + bound
            points = [("lengths", n, f"/chain/{n}", small, requests) for n in sweep.LENGTHS]
            points += [("sizes", size, f"/chain/{sweep.PAYLOAD_HOPS}", os.urandom(size), max(requests // 3, 10))
                       for size in sweep.SIZES]
            # the largest payload through one hop: what the client's transfer costs whatever the hops do
            big = sweep.SIZES[-1]
            points.append(("one_hop", big, "/chain/1", os.urandom(big), max(requests // 3, 10)))
            out: dict[str, Any] = {"lengths": {}, "sizes": {}, "one_hop": {}}
            for key, x, path, payload, count in points:
                if time.monotonic() > deadline:
                    return {**out, "error": f"timed out after {bound:.0f} s"}
                out[key][x] = sweep.measure(port, path, payload, count)
            return out

        runs = {}
        for plane in self.planes:
            label = f"{plane} (as {self.substituted()[plane]})" if plane in self.substituted() else plane
            runs[plane] = {**self.on("sweep", plane, "bench.apps:chains", body, self.args(plane)), "transport": plane,
                           "label": label}
            self.step()
        return {"runs": runs, "requests": requests, "hops": sweep.PAYLOAD_HOPS, "substituted": self.substituted()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.paper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds a phase (about 4 minutes in all)")
    p.add_argument("--planes", default=None, help=f"comma list of {', '.join(PLANES)} "
                   f"(default quick: {','.join(DEFAULT_PLANES['quick'])}; full: all)")
    p.add_argument("--out", type=Path, default=None, help="results directory (default bench/results/<stamp>)")
    p.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: a tiny run
    args = p.parse_args(argv)
    planes = args.planes.split(",") if args.planes else DEFAULT_PLANES["quick" if args.quick else "full"]
    unknown = [plane for plane in planes if plane not in PLANES]
    if unknown:
        p.error(f"unknown plane(s) {', '.join(unknown)}; choose from {', '.join(PLANES)}")
    args.planes = planes
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: Path = args.out or RESULTS / stamp
    out.mkdir(parents=True, exist_ok=True)
    scale = Scale.make(args.quick, args.scale)
    workdir = Path(tempfile.mkdtemp(prefix="spright-paper-"))
    doc: dict[str, Any] = {"machine": machine(), "planes": {p: PLANES[p] for p in args.planes},
                           "config": {"quick": args.quick, "scale": args.scale, **asdict(scale), "logs": str(workdir)}}
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    # "poll" means spinning: an inherited SPRIGHT_POLL_IDLE_US would make every poll node adaptive
    with mock.patch.dict(os.environ), Progress(*columns, console=console) as progress:
        os.environ.pop("SPRIGHT_POLL_IDLE_US", None)
        harness = Harness(args.planes, scale, args.quick, workdir, progress)
        figs: dict[str, Any] = harness.boutique()
        figs["fig11"] = harness.motion()
        figs["fig12"] = harness.parking()
        figs["echo3"] = harness.echo3()
        figs["sweep"] = harness.sweep()
    doc.update(figures=figs, commands=harness.commands, unavailable=harness.unavailable,
               wall_seconds=round(time.monotonic() - started, 1))
    figures.write(doc, out)
    if args.out is None:
        latest = RESULTS / "latest"
        shutil.rmtree(latest, ignore_errors=True)
        latest.mkdir(parents=True)
        for name in ["summary.md", *figures.PNGS]:
            shutil.copy2(out / name, latest / name)
    console.log(f"wrote {out} in {doc['wall_seconds']:.0f} s")
    print((out / "summary.md").read_text())
    return out


if __name__ == "__main__":
    main()
