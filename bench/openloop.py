"""Open-loop load and CPU over time: the two instruments of ``bench.paper``.

Open loop: requests are scheduled at a fixed rate (uniformly or as a Poisson process) before
any is sent, and each one's latency runs from its SCHEDULED send time, so a server that falls
behind is charged for the queue it builds (no coordinated omission, unlike a closed loop whose
clients politely wait). Two workloads: one fixed request (:func:`single`), or the Online
Boutique mix with upstream's task weights (:func:`boutique`), whose tasks run on a pool of
shoppers (``apps.online_boutique.load.User``: their own cookies and connections), each request
of a multi-request task recorded under its own kind.

CPU over time (:class:`CpuSampler`): every ``interval`` seconds, the cores used by a process
and all its descendants (gateway, workers, sidecars, pollers), from /proc via ``bench.procs``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from apps.loadkit import require_loopback, summary
from apps.online_boutique.load import TASK_WEIGHTS, Stats, User
from bench.procs import cpu_by_pid, descendants

# Requests one boutique task makes, redirects included (setCurrency and POST /cart answer 302):
# turns an offered request rate into a task rate; the achieved request rate is measured anyway.
REQUESTS_IN_TASK = {"index": 1, "setCurrency": 2, "browseProduct": 1, "addToCart": 3, "viewCart": 1, "checkout": 4}
REQUESTS_PER_TASK = sum(REQUESTS_IN_TASK[k] * w for k, w in TASK_WEIGHTS.items()) / sum(TASK_WEIGHTS.values())
CDF_POINTS = 400  # latency samples kept per kind: evenly spaced ranks of the sorted samples


def schedule(rate: float, duration: float, poisson: bool, rng: random.Random) -> list[float]:
    """Send offsets in seconds: every 1/rate, or exponential gaps of mean 1/rate."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    offsets: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate) if poisson else 1 / rate
        if t >= duration:
            return offsets
        offsets.append(t)


def cdf(seconds: list[float], points: int = CDF_POINTS) -> list[float]:
    """Milliseconds at evenly spaced ranks: enough to draw the CDF, small enough to store."""
    ordered = sorted(seconds)
    if len(ordered) <= points:
        return [round(s * 1000, 3) for s in ordered]
    return [round(ordered[round(i * (len(ordered) - 1) / (points - 1))] * 1000, 3) for i in range(points)]


async def drive(fire: Callable[[float], Awaitable[None]], offsets: list[float], grace: float) -> dict[str, Any]:
    """Start ``fire(due)`` at each offset (``due`` a perf_counter time), late or not; then wait at
    most ``grace`` seconds for stragglers, which are cancelled and counted as unfinished."""
    start = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []
    worst_lag = 0.0
    for offset in offsets:
        due = start + offset
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        worst_lag = max(worst_lag, time.perf_counter() - due)
        tasks.append(asyncio.ensure_future(fire(due)))
    sent = time.perf_counter()
    done, pending = await asyncio.wait(tasks, timeout=grace) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failures = [repr(t.exception()) for t in done if t.exception() is not None]
    return {"scheduled": len(offsets), "unfinished": len(pending), "send_seconds": round(sent - start, 3),
            "wall_seconds": round(time.perf_counter() - start, 3), "worst_send_lag_ms": round(worst_lag * 1000, 3),
            "failures": failures[:5]}


def report(stats: Stats, run: dict[str, Any], rate: float, poisson: bool) -> dict[str, Any]:
    """Per-kind percentiles and CDF points, statuses, errors, achieved rate."""
    kinds = {kind: {"requests": len(values), "errors": stats.errors.get(kind, 0), **summary(values),
                    "cdf_ms": cdf(values)} for kind, values in sorted(stats.latencies.items())}
    requests = sum(len(v) for v in stats.latencies.values())
    errors = sum(stats.errors.values()) + run["unfinished"] + len(run["failures"])
    achieved = round(requests / run["wall_seconds"], 1) if run["wall_seconds"] else 0.0  # stragglers included
    return {"offered_rps": round(rate, 1), "arrivals": "poisson" if poisson else "uniform", **run,
            "requests": requests, "achieved_rps": achieved,
            "errors": errors, "statuses": dict(sorted(stats.statuses.items())), "error_samples": stats.samples,
            "latency": summary([s for v in stats.latencies.values() for s in v]), "kinds": kinds}


async def single(url: str, method: str, path: str, body: bytes | None, rate: float, duration: float, *,
                 poisson: bool = False, connections: int = 64, grace: float = 10.0, seed: int = 1) -> dict[str, Any]:
    """One request (``method path``, ``body``) at ``rate`` per second for ``duration`` seconds."""
    target, kind, stats = require_loopback(url) + path, f"{method} {path}", Stats()
    offsets = schedule(rate, duration, poisson, random.Random(seed))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=grace)) as session:

        async def fire(due: float) -> None:
            try:
                async with session.request(method, target, data=body) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                stats.record(kind, time.perf_counter() - due, None, f"{type(exc).__name__}: {exc}")
                return
            problem = f"HTTP {status}" if status >= 400 else None
            stats.record(kind, time.perf_counter() - due, status, problem)

        run = await drive(fire, offsets, grace)
    return report(stats, run, rate, poisson)


async def boutique(url: str, rate: float, duration: float, *, users: int = 64, poisson: bool = True,
                   grace: float = 10.0, seed: int = 1) -> dict[str, Any]:
    """The Online Boutique mix at ``rate`` requests per second (tasks at rate / REQUESTS_PER_TASK),
    each task on the next idle shopper; waiting for one counts in the first request's latency."""
    url, stats, rng = require_loopback(url), Stats(), random.Random(seed)
    offsets = schedule(rate / REQUESTS_PER_TASK, duration, poisson, rng)
    shoppers = [User(url, stats, random.Random(rng.random())) for _ in range(users)]
    idle: asyncio.Queue[User] = asyncio.Queue()
    for shopper in shoppers:
        idle.put_nowait(shopper)

    async def fire(due: float) -> None:
        shopper = await idle.get()
        try:
            shopper.due = due
            await shopper.pick_task()()
        finally:
            idle.put_nowait(shopper)

    try:
        run = await drive(fire, offsets, grace)
    finally:
        await asyncio.gather(*(s.session.close() for s in shoppers))
    return {**report(stats, run, rate, poisson), "users": users, "requests_per_task": round(REQUESTS_PER_TASK, 3)}


class CpuSampler:
    """Cores used by ``pid``'s process tree, sampled every ``interval`` seconds on a thread.

    The tree is re-read at every sample, so processes started late (sidecars, respawned workers)
    count from their first appearance; a process that exits between samples loses its last slice."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.times: list[float] = []
        self.cores: list[float] = []
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._last: dict[int, float] = {}
        self._t0 = self._then = 0.0

    def _sample(self) -> None:
        now, current = time.monotonic(), cpu_by_pid(descendants(self.pid))
        spent = sum(max(cpu - self._last.get(pid, 0.0), 0.0) for pid, cpu in current.items())
        self.cpu_seconds += spent
        self.times.append(round(now - self._t0, 3))
        self.cores.append(round(spent / (now - self._then), 3))
        self._last, self._then = current, now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._t0 = self._then = time.monotonic()
        self._last = cpu_by_pid(descendants(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if time.monotonic() - self._then > self.interval / 5:
            self._sample()

    def result(self, requests: int | None = None) -> dict[str, Any]:
        """Samples, totals, and CPU-seconds per 1,000 requests when ``requests`` is given."""
        elapsed = self.times[-1] if self.times else 0.0
        out: dict[str, Any] = {
            "interval_s": self.interval, "t": self.times, "cores": self.cores,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "mean_cores": round(self.cpu_seconds / elapsed, 3) if elapsed else 0.0,
            "max_cores": max(self.cores, default=0.0)}
        if requests:
            out["cpu_s_per_1k_requests"] = round(self.cpu_seconds / requests * 1000, 4)
        return out
