"""Upstream's parking load profile: bursts of concurrent photo POSTs every N seconds.

Each burst is ``--burst`` (164, as upstream) requests fired at once, 90% route 2 (``/parking/quote``)
and 10% route 1 (``/parking/events``), photos drawn from a pool of rendered cars; then the
tool waits for the next tick. Prints JSON: per-route latency percentiles, statuses, plates read
correctly (the generator's ground truth), and per-function time from the responses' ``timings_ms``.

``python -m apps.parking.load [--url http://127.0.0.1:8080] [--burst 164] [--every 10] [--bursts 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import aiohttp

from apps.loadkit import require_loopback, summary
from apps.parking.plates import key
from apps.parking.synth import Sample, samples

MAX_BURST, MAX_BURSTS = 1000, 100
ROUTES = {"route1": "/parking/events", "route2": "/parking/quote"}


async def run(url: str, burst: int = 164, every: float = 10.0, bursts: int = 3, photos: int = 24,
              route1_share: float = 0.1, seed: int = 1) -> dict[str, Any]:
    url = require_loopback(url)
    if not 1 <= burst <= MAX_BURST or not 1 <= bursts <= MAX_BURSTS:
        raise SystemExit(f"--burst must be 1..{MAX_BURST} and --bursts 1..{MAX_BURSTS}")
    rng = random.Random(seed)
    pool: list[Sample] = await asyncio.to_thread(samples, photos, seed)
    latencies: dict[str, list[float]] = {name: [] for name in ROUTES}
    statuses: dict[str, int] = {}
    functions: dict[str, list[float]] = {}
    read = {"correct": 0, "wrong": 0, "review": 0}  # review: unsure reads, held for an operator
    burst_walls = []
    limits = aiohttp.TCPConnector(limit=burst)
    async with aiohttp.ClientSession(connector=limits, timeout=aiohttp.ClientTimeout(total=180)) as session:

        async def one(route: str, sample: Sample) -> None:
            started = time.monotonic()
            async with session.post(url + ROUTES[route], data=sample.jpeg,
                                    headers={"content-type": "image/jpeg"}) as response:
                body = await response.read()
                status = response.status
            latencies[route].append(time.monotonic() - started)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status < 300:
                answer = json.loads(body)
                read["correct" if answer["plate_key"] == key(sample.plate) else "wrong"] += 1
                read["review"] += answer.get("state") == "review"
                for name, ms in answer.get("timings_ms", {}).items():
                    functions.setdefault(name, []).append(ms / 1000)

        start = time.monotonic()
        for n in range(bursts):
            await asyncio.sleep(max(0.0, start + n * every - time.monotonic()))
            began = time.monotonic()
            await asyncio.gather(*(one("route1" if rng.random() < route1_share else "route2", rng.choice(pool))
                                   for _ in range(burst)))
            burst_walls.append(round(time.monotonic() - began, 3))
    total = sum(len(v) for v in latencies.values())
    return {"requests": total, "bursts": bursts, "burst": burst, "every_s": every, "burst_wall_s": burst_walls,
            "statuses": statuses, "plates": read, **{name: summary(v) for name, v in latencies.items()},
            "functions": {name: summary(v) for name, v in sorted(functions.items())}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apps.parking.load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--burst", type=int, default=164)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between burst starts")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--photos", type=int, default=24, help="distinct photos to draw from")
    parser.add_argument("--route1-share", type=float, default=0.1)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.url, args.burst, args.every, args.bursts, args.photos,
                                     args.route1_share)), indent=2))


if __name__ == "__main__":
    main()
