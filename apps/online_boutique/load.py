"""Online Boutique's Locust load profile, as an asyncio + aiohttp load generator.

    python -m apps.online_boutique.load --url http://127.0.0.1:8080 --users 20 --duration 10

Each simulated user has its own session (cookie jar, connection), starts on the home page
and then picks tasks with upstream's weights: index 1, setCurrency 2, browseProduct 10,
addToCart 2 (GET product + POST cart), viewCart 3, checkout 1 (addToCart + POST checkout).
Redirects are followed like Locust does, but as their own requests, so every kind's
latency is one request's. Users run closed-loop (no think time) unless ``--wait`` is set.
Prints one JSON summary: RPS, per-kind latency percentiles, errors and status counts.
Bounded on purpose: loopback targets only, at most 1000 users and 600 s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from apps.loadkit import require_loopback, summary
from apps.online_boutique.data import FRONTEND_CURRENCIES, PRODUCTS

PRODUCT_IDS = [p["id"] for p in PRODUCTS]
TASK_WEIGHTS = {"index": 1, "setCurrency": 2, "browseProduct": 10, "addToCart": 2, "viewCart": 3, "checkout": 1}
QUANTITIES = [1, 2, 3, 4, 5, 10]  # upstream's choices
MAX_USERS, MAX_DURATION = 1000, 600.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)  # kind -> first error seen

    def record(self, kind: str, seconds: float, status: int | None, problem: str | None = None) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.statuses[str(status or "exception")] = self.statuses.get(str(status or "exception"), 0) + 1
        if problem is not None:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.samples.setdefault(kind, problem)


def visa_number(rng: random.Random) -> str:
    """A random 16-digit VISA number with a valid Luhn check digit (what Faker's would be)."""
    digits = [4, *(rng.randrange(10) for _ in range(14))]
    total = sum(d if i % 2 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


class User:
    """One shopper: its own cookie jar and connection, like a Locust user."""

    def __init__(self, url: str, stats: Stats, rng: random.Random) -> None:
        self.url, self.stats, self.rng = url.rstrip("/"), stats, rng
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=REQUEST_TIMEOUT)
        self.due: float | None = None  # open loop (bench.openloop): the next request's scheduled perf_counter()

    async def request(self, method: str, path: str, kind: str, data: dict[str, Any] | None = None) -> None:
        # an open-loop request's latency runs from its scheduled time, queueing included
        started, self.due = self.due if self.due is not None else time.perf_counter(), None
        location = None
        try:
            async with self.session.request(method, self.url + path, data=data, allow_redirects=False) as r:
                await r.read()
                status = r.status
                location = r.headers.get("location") if 300 <= status < 400 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.record(kind, time.perf_counter() - started, None, f"{type(exc).__name__}: {exc}")
            return
        problem = f"HTTP {status} on {method} {path}" if status >= 400 else None
        self.stats.record(kind, time.perf_counter() - started, status, problem)
        if location is not None:  # Locust follows redirects; so do we, as a request of its own kind
            target = urlsplit(urljoin(self.url + path, location))
            await self.request("GET", target.path or "/", f"GET {target.path or '/'}")

    async def index(self) -> None:
        await self.request("GET", "/", "GET /")

    async def set_currency(self) -> None:
        await self.request("POST", "/setCurrency", "POST /setCurrency",
                           {"currency_code": self.rng.choice(FRONTEND_CURRENCIES)})

    async def browse_product(self) -> None:
        await self.request("GET", f"/product/{self.rng.choice(PRODUCT_IDS)}", "GET /product/{id}")

    async def view_cart(self) -> None:
        await self.request("GET", "/cart", "GET /cart")

    async def add_to_cart(self) -> None:
        product = self.rng.choice(PRODUCT_IDS)
        await self.request("GET", f"/product/{product}", "GET /product/{id}")
        await self.request("POST", "/cart", "POST /cart",
                           {"product_id": product, "quantity": self.rng.choice(QUANTITIES)})

    async def checkout(self) -> None:
        await self.add_to_cart()
        year = datetime.date.today().year + 1
        n = self.rng.randrange(1, 10_000)
        await self.request("POST", "/cart/checkout", "POST /cart/checkout", {
            "email": f"shopper{n}@example.com", "street_address": f"{n} Main Street", "zip_code": f"{n:05d}",
            "city": "Springfield", "state": "CA", "country": "United States",
            "credit_card_number": visa_number(self.rng), "credit_card_expiration_month": self.rng.randint(1, 12),
            "credit_card_expiration_year": self.rng.randint(year, year + 70),
            "credit_card_cvv": str(self.rng.randint(100, 999)),
        })

    def pick_task(self) -> Callable[[], Awaitable[None]]:
        """One task drawn with upstream's weights."""
        tasks = {"index": self.index, "setCurrency": self.set_currency, "browseProduct": self.browse_product,
                 "addToCart": self.add_to_cart, "viewCart": self.view_cart, "checkout": self.checkout}
        return tasks[self.rng.choices(list(TASK_WEIGHTS), list(TASK_WEIGHTS.values()))[0]]

    async def run(self, deadline: float, wait: tuple[float, float]) -> None:
        try:
            await self.index()  # upstream's on_start
            while time.monotonic() < deadline:
                await self.pick_task()()
                if wait[1] > 0:
                    await asyncio.sleep(min(self.rng.uniform(*wait), max(deadline - time.monotonic(), 0)))
        finally:
            await self.session.close()


def check_target(url: str, users: int, duration: float) -> None:
    """Refuse anything but a short, bounded run against this machine."""
    require_loopback(url)
    if not 1 <= users <= MAX_USERS:
        raise ValueError(f"--users must be between 1 and {MAX_USERS}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"--duration must be more than 0 and at most {MAX_DURATION:g} seconds")


async def run(url: str, users: int = 10, duration: float = 10.0, *, wait: tuple[float, float] = (0.0, 0.0),
              seed: int | None = None) -> dict[str, Any]:
    """Run the profile and return its summary (what the command prints)."""
    check_target(url, users, duration)
    stats, master = Stats(), random.Random(seed)
    started = time.monotonic()
    shoppers = [User(url, stats, random.Random(master.random())) for _ in range(users)]
    await asyncio.gather(*(user.run(started + duration, wait) for user in shoppers))
    elapsed = time.monotonic() - started
    kinds = {}
    for kind, values in sorted(stats.latencies.items()):
        kinds[kind] = {"requests": len(values), "errors": stats.errors.get(kind, 0),
                       "rps": round(len(values) / elapsed, 1), **summary(values)}
    requests = sum(k["requests"] for k in kinds.values())
    return {
        "url": url, "users": users, "duration_s": round(elapsed, 2), "requests": requests,
        "rps": round(requests / elapsed, 1), "errors": sum(stats.errors.values()),
        "statuses": dict(sorted(stats.statuses.items())), "kinds": kinds, "error_samples": stats.samples,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apps.online_boutique.load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the shop (loopback only)")
    parser.add_argument("--users", type=int, default=10, help=f"simulated users, 1..{MAX_USERS} (default 10)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10, at most 600)")
    parser.add_argument("--wait", type=float, nargs=2, default=(0.0, 0.0), metavar=("MIN", "MAX"),
                        help="think time between tasks in seconds (Locust's profile uses 1 10; default none)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable task sequences")
    args = parser.parse_args(argv)
    try:
        summary = asyncio.run(run(args.url, args.users, args.duration, wait=tuple(args.wait), seed=args.seed))
    except ValueError as exc:
        parser.error(str(exc))
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
