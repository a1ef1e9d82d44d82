"""What tracing costs a node (issue 25's goals), and where a real page's time goes.

1. Overhead: each app (``bench.apps:echo3``, a 3-hop POST chain, and ``bench.apps:noop``) under
   ``wrk -c32`` on a fresh node per mode, the modes alternating (reversed every other round, so
   the machine's drift hits all alike):

   - ``off``: no tracing option;
   - ``sample-0.01``: 1% of requests traced and kept (no exporter);
   - ``sample-1-export``: every request traced, kept and exported over OTLP/HTTP to a sink
     collector in its own process (``bench.otlp_sink``), so the SDK's real work is in the node's
     CPU and the sink's is not; the sink must have received spans, or the run fails;
   - ``tail``: ``--trace-errors --trace-slower-than 1``: every request recorded and assembled
     (the tail rules need the whole request), none kept.

   Per run: RPS, CPU µs per request (every process of the node, from /proc, as bench.callpath),
   p50/p99; per mode, the medians over rounds and the median over rounds of its ratio to ``off``
   of the same round.
2. The breakdown of Online Boutique's product page per service (``bench.trace_breakdown``), as a
   PNG and in the JSON.

``python -m bench.trace [--duration 8] [--rounds 2] [--out FILE] [--png FILE]``; the JSON goes to
``bench/results/trace-<stamp>.json`` unless ``--out``, the PNG to
``bench/results/trace-breakdown-<stamp>.png`` unless ``--png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import trace_breakdown
from bench.callpath import cpu_per_request
from bench.load import run_wrk, write_script
from bench.paper import ECHO_BODY
from bench.procs import Server, free_ports
from bench.run import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CONNECTIONS = 32
WARM_UP_S = 2.0
SINK = "<sink>"  # in a mode's options: the sink's URL
MODES: dict[str, tuple[str, ...]] = {
    "off": (),
    "sample-0.01": ("--trace-sample", "0.01"),
    "sample-1-export": ("--trace-sample", "1", "--otlp", SINK),
    "tail": ("--trace-errors", "--trace-slower-than", "1"),
}
console = Console(stderr=True)


@dataclass(frozen=True)
class Workload:
    app: str
    method: str
    body: bytes | None
    spans: int  # spans an exported request makes: the server span and one per hop


WORKLOADS = {"echo3": Workload("bench.apps:echo3", "POST", ECHO_BODY, 4),
             "noop": Workload("bench.apps:noop", "GET", None, 2)}


class Sink:
    """The OTLP/HTTP sink process (bench.otlp_sink) and what it received."""

    def __init__(self, workdir: Path) -> None:
        (self.port,) = free_ports(1)
        self.server = Server([sys.executable, "-m", "bench.otlp_sink", str(self.port)], [self.port],
                             workdir / "otlp-sink.log", ROOT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def counts(self) -> dict[str, float]:
        """What it got so far, and its own CPU seconds."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as answer:
            counts: dict[str, float] = json.loads(answer.read())
        return {**counts, "cpu_s": sum(self.server.cpu().values())}

    def __enter__(self) -> Sink:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()


def options(mode: str, sink: Sink) -> list[str]:
    return [sink.url if option == SINK else option for option in MODES[mode]]


def measure(name: str, mode: str, sink: Sink, transport: str, duration: float, workdir: Path) -> dict[str, Any]:
    """One run: a fresh node of ``name``'s app in ``mode``, warmed up, then ``wrk -c32`` for
    ``duration`` s. The sink's counts are taken after the node stopped: its exporter sends what
    it still holds on the way out."""
    work = WORKLOADS[name]
    load_1m = round(os.getloadavg()[0], 2)
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "spright", "run", work.app, "--port", str(port), "--transport", transport,
            *options(mode, sink)]
    server = Server(argv, [port], workdir / f"{name}-{mode}-{port}.log", ROOT)
    before_sink = sink.counts()
    server.start()
    try:
        url, script = f"http://127.0.0.1:{port}/", write_script(work.method, work.body, workdir)
        warm = run_wrk(url, script, CONNECTIONS, WARM_UP_S)
        before = server.cpu()
        load = run_wrk(url, script, CONNECTIONS, duration)
        cpu, per_pid = cpu_per_request(server, load.requests, before)
    finally:
        stop = server.stop()
    if sum(load.errors.values()):
        raise RuntimeError(f"{name} {mode}: wrk saw errors: {load.errors}")
    sink_got = {key: value - before_sink[key] for key, value in sink.counts().items()}
    out = {"load_1m": load_1m, "rps": load.rps, "cpu_us": round(cpu, 1), "p50_us": load.p50_us,
           "p99_us": load.p99_us, "requests": load.requests, "wrk": load.to_dict(), "cpu_s_by_pid": per_pid,
           "stop": stop, "sink": sink_got}
    if "--otlp" in MODES[mode]:
        expected = (warm.requests + load.requests) * work.spans
        if not sink_got["spans"]:
            raise RuntimeError(f"{name} {mode}: the sink received no span: {sink_got}\n{server.tail()}")
        out["exported_share"] = round(sink_got["spans"] / expected, 3)  # < 1: the SDK's queue dropped spans
    return out


def overhead(names: list[str], rounds: int, transport: str, duration: float, sink: Sink,
             workdir: Path, modes: list[str] | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every app in every mode (``modes``: those only), ``rounds`` times: runs[app][mode][round]."""
    modes = modes or list(MODES)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {mode: [] for mode in modes} for name in names}
    for round_ in range(rounds):
        for name in names:
            for mode in (modes if round_ % 2 == 0 else modes[::-1]):
                run = measure(name, mode, sink, transport, duration, workdir)
                console.log(f"round {round_ + 1} {name:<5} {mode:<15} load {run['load_1m']:<5} {run['rps']:>9,.0f} "
                            f"req/s  {run['cpu_us']:>6.1f} µs CPU/req  p99 {run['p99_us']} µs")
                runs[name][mode].append(run)
    return runs


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per app and mode: the medians over rounds, and the median over rounds of the ratio to
    ``off`` in the same round (``*_x_off``)."""
    out: dict[str, Any] = {}
    for name, by_mode in runs.items():
        out[name] = {}
        for mode, results in by_mode.items():
            figures = {key: statistics.median(r[key] for r in results) for key in ("rps", "cpu_us", "p50_us", "p99_us")}
            for key in ("rps", "cpu_us", "p99_us"):
                ratios = [r[key] / off[key] for r, off in zip(results, by_mode["off"], strict=True) if off[key]]
                figures[f"{key}_x_off"] = round(statistics.median(ratios), 3) if ratios else None
            if any("exported_share" in r for r in results):
                figures["exported_share"] = statistics.median(r["exported_share"] for r in results)
            out[name][mode] = figures
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.trace", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds of wrk -c32 per run")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the modes")
    p.add_argument("--apps", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)} (off first)")
    p.add_argument("--transport", default="skmsg")
    p.add_argument("--requests", type=int, default=400, help="product pages one at a time for the breakdown")
    p.add_argument("--loaded", type=float, default=8.0, help="seconds of wrk -c8 on the product page (0: none)")
    p.add_argument("--out", type=Path, default=None, help="the JSON (default bench/results/trace-<stamp>.json)")
    p.add_argument("--png", type=Path, default=None,
                   help="the breakdown (default bench/results/trace-breakdown-<stamp>.png)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"trace-{stamp}.json"
    png = args.png or RESULTS / f"trace-breakdown-{stamp}.png"
    started = time.monotonic()
    doc: dict[str, Any] = {"machine": machine(), "transport": args.transport, "duration_s": args.duration,
                           "rounds": args.rounds, "connections": CONNECTIONS, "warm_up_s": WARM_UP_S,
                           "modes": {mode: list(opts) for mode, opts in MODES.items()},
                           "apps": {name: WORKLOADS[name].app for name in args.apps.split(",")}}
    with tempfile.TemporaryDirectory(prefix="spright-trace-") as tmp, Sink(Path(tmp)) as sink:
        runs = overhead(list(doc["apps"]), args.rounds, args.transport, args.duration, sink, Path(tmp),
                        args.modes.split(","))
        doc |= {"runs": runs, "summary": summarize(runs)}
        doc["breakdown"] = {"load_1m": round(os.getloadavg()[0], 2),
                            **trace_breakdown.measure(args.transport, args.requests, args.loaded, Path(tmp),
                                                      console.log)}
    trace_breakdown.plot(doc["breakdown"], png, doc["machine"]["date"][:10])
    doc |= {"png": str(png), "wall_seconds": round(time.monotonic() - started)}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"summary": doc["summary"], "breakdown": doc["breakdown"]["serial"]}, indent=1))
    console.log(f"wrote {out} and {png}")
    return out


if __name__ == "__main__":
    main()
