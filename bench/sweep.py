"""Latency against chain length (1..10 hops) and payload size (1 KB..1 MB through 5 hops), per
data plane, on one node of ``bench.apps:chains`` each; writes JSON and a two-panel PNG figure.

One keep-alive client sends requests one at a time (the latency of a lone request: what a hop
costs, not what the machine can batch), each POST body echoed in place along the chain; the
figure plots the median with the 10th-90th percentile band. ``python -m bench.sweep
[--transports skmsg,unix,poll] [--requests 300] [--out DIR]``; poll runs adaptive (``--poll-idle-us``,
default 100): ten spinning workers on a small machine would measure the scheduler.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import Server, free_ports
from spright.transport import registry

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = tuple(range(1, 11))
SIZES = (1 << 10, 10 << 10, 100 << 10, 1 << 20)
PAYLOAD_HOPS = 5


def _quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=10)
    return {"p10": cuts[0], "p50": statistics.median(samples), "p90": cuts[-1]}


def measure(port: int, path: str, body: bytes, requests: int) -> dict[str, float]:
    """Seconds per request (p10, p50, p90) over ``requests`` sequential keep-alive POSTs."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        samples = []
        for i in range(requests + requests // 10):  # the first tenth warms up and is dropped
            started = time.perf_counter()
            connection.request("POST", path, body)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200 or answer != body:
                raise RuntimeError(f"{path}: {response.status}, {len(answer)} bytes back for {len(body)}")
            if i >= requests // 10:
                samples.append(time.perf_counter() - started)
        return _quantiles(samples)
    finally:
        connection.close()


def sweep(transport: str, requests: int, poll_idle_us: int, workdir: Path) -> dict[str, Any]:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "spright", "run", "bench.apps:chains", "--port", str(port), "--transport", transport]
    if transport == "poll":
        argv += ["--poll-idle-us", str(poll_idle_us)]
    server = Server(argv, [port], workdir / f"{transport}.log", ROOT)
    server.start()
    try:
        small = os.urandom(64)
        lengths = {n: measure(port, f"/chain/{n}", small, requests) for n in LENGTHS}
        sizes = {size: measure(port, f"/chain/{PAYLOAD_HOPS}", os.urandom(size), max(requests // 3, 30))
                 for size in SIZES}
    finally:
        server.stop()
    label = f"poll (idle {poll_idle_us} µs)" if transport == "poll" else transport
    return {"transport": transport, "label": label, "lengths": lengths, "sizes": sizes}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (by_length, by_size) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    for result in results:
        for axes, key, xs in ((by_length, "lengths", LENGTHS), (by_size, "sizes", SIZES)):
            points = [result[key][x] for x in xs]
            p50 = [p["p50"] * 1e3 for p in points]
            axes.plot(xs, p50, marker="o", label=result["label"])
            axes.fill_between(xs, [p["p10"] * 1e3 for p in points], [p["p90"] * 1e3 for p in points], alpha=0.2)
    by_length.set(title="latency by chain length (64 B)", xlabel="functions in the chain", ylabel="ms per request")
    by_size.set(title=f"latency by payload ({PAYLOAD_HOPS} hops)", xlabel="payload bytes", ylabel="ms per request",
                xscale="log")
    for axes in (by_length, by_size):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    available = [n for n, cls in registry().items() if cls.unavailable_reason() is None]
    parser.add_argument("--transports", default=",".join(available))
    parser.add_argument("--requests", type=int, default=300, help="per chain length (payload points: a third)")
    parser.add_argument("--poll-idle-us", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="spright-sweep-") as work:
        for transport in args.transports.split(","):
            print(f"sweeping {transport}...", file=sys.stderr)
            results.append(sweep(transport, args.requests, args.poll_idle_us, Path(work)))
    (args.out / "sweep.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "sweep.png")
    for result in results:
        lengths, sizes = result["lengths"], result["sizes"]
        per_hop = (lengths[10]["p50"] - lengths[1]["p50"]) / 9 * 1e6
        ratio = sizes[SIZES[-1]]["p50"] / sizes[SIZES[0]]["p50"]
        print(f"{result['label']:>22}: 1 hop {lengths[1]['p50'] * 1e3:.3f} ms, 10 hops "
              f"{lengths[10]['p50'] * 1e3:.3f} ms ({per_hop:.0f} µs a hop); {PAYLOAD_HOPS} hops: 1 KB "
              f"{sizes[SIZES[0]]['p50'] * 1e3:.3f} ms, 1 MB {sizes[SIZES[-1]]['p50'] * 1e3:.3f} ms ({ratio:.2f}x)")
    print(f"wrote {args.out / 'sweep.json'} and {args.out / 'sweep.png'}")


if __name__ == "__main__":
    main()
