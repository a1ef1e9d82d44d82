"""The Online Boutique's request mix, open loop at a fixed rate, from bench.tailgen's clean sender.

``bench.openloop.boutique`` (aiohttp, in the harness's process) cannot offer half the boutique's
saturated rate on 2 shared cores without falling behind itself (sends tens of ms late). This
sends the same mix as ``bench.load``'s wrk script (upstream's task weights spread over their
requests, redirects included: GET / 3, POST /setCurrency 2, GET /product/{id} 13, POST /cart 3,
GET /cart 6, POST /cart/checkout 1; shoppers' cookies; a checkout only for a cart filled 1024
requests ago) through bench.tailgen's timerfd-driven raw connections, in a process of its own:

    python -m bench.mixgen http://127.0.0.1:PORT --rate 600 --duration 20

and prints, as JSON, every request's due time (ms from the start, on CLOCK_MONOTONIC so another
process can tell what happened when), latency from its due time (-1: no answer) and status (0:
none: the connection failed or was reset), so a harness can cut them into windows of time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from urllib.parse import urlsplit

import uvloop

from apps.loadkit import require_loopback
from apps.online_boutique.data import FRONTEND_CURRENCIES, PRODUCTS
from bench.openloop import schedule
from bench.tailgen import LATE_NS, Connection, Run, drive

MIX = {"index": 3, "currency": 2, "product": 13, "add": 3, "cart": 6, "checkout": 1}
ORDER = ("email=shopper%40example.com&street_address=1+Main+Street&zip_code=94043&city=Springfield&state=CA"
         "&country=United+States&credit_card_number=4432801561520454&credit_card_expiration_month=1"
         "&credit_card_expiration_year=2039&credit_card_cvv=672")
CHECKOUT_GAP = 1024  # requests between a cart's add and its checkout (and a checkout and the next add)


def mix_requests(host: str, port: int, count: int, sessions: int = 256, seed: int = 1) -> list[bytes]:
    """``count`` raw requests drawn from the mix (bench.load's Lua, in Python)."""
    rng, run = random.Random(seed), f"{os.getpid():x}{int(time.time()):x}"  # this run's own shoppers
    shoppers = [f"shopper-{run}-{i}" for i in range(sessions)]
    kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]
    products = [p["id"] for p in PRODUCTS]
    filled: list[tuple[str, int]] = []  # shoppers whose cart holds something, oldest add first
    checking: dict[str, int] = {}  # shopper -> when their checkout was sent
    out = []
    for sent in range(1, count + 1):
        kind, shopper = rng.choice(kinds), rng.choice(shoppers)
        if kind == "checkout":
            if not filled or sent - filled[0][1] < CHECKOUT_GAP:
                kind = "add"
            else:
                shopper = filled.pop(0)[0]
                checking[shopper] = sent
        if kind == "add" and sent - checking.get(shopper, -CHECKOUT_GAP) < CHECKOUT_GAP:
            kind = "product"  # an add now could land before that checkout empties the cart
        method, path, body = "GET", "/", ""
        if kind == "product":
            path = f"/product/{rng.choice(products)}"
        elif kind == "cart":
            path = "/cart"
        elif kind == "currency":
            method, path, body = "POST", "/setCurrency", f"currency_code={rng.choice(FRONTEND_CURRENCIES)}"
        elif kind == "add":
            if all(s != shopper for s, _ in filled):
                filled.append((shopper, sent))
            method, path = "POST", "/cart"
            body = f"product_id={rng.choice(products)}&quantity={rng.randint(1, 5)}"
        elif kind == "checkout":
            method, path, body = "POST", "/cart/checkout", ORDER
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: shop_session-id={shopper}\r\n"
        if method == "POST":
            head += f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        out.append(f"{head}\r\n{body}".encode("ascii"))
    return out


class MixRun(Run):
    """bench.tailgen's Run, each send its own request of the mix, each answer's status kept."""

    def __init__(self, host: str, port: int, requests: list[bytes]) -> None:
        super().__init__(host, port, b"", [])
        self.requests, self.status = requests, [0] * len(requests)

    def write(self, connection: Connection, index: int) -> None:
        assert connection.transport is not None
        connection.index = index
        self.sent[index] = time.monotonic_ns()
        connection.transport.write(self.requests[index])

    def answered(self, connection: Connection, status: int) -> None:
        if connection.index >= 0:
            self.status[connection.index] = status
        super().answered(connection, status)


async def generate(url: str, rate: float, duration: float, connections: int = 32, grace: float = 10.0) -> dict:
    parts = urlsplit(require_loopback(url))
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    offsets = schedule(rate, duration, False, random.Random(1))
    run = MixRun(host, port, mix_requests(host, port, len(offsets)))
    await run.open(connections)
    start = await drive(run, offsets, duration + grace, announce=True)  # a harness times what it does from it
    lag = [run.sent[i] - run.due[i] for i in range(run.next) if run.sent[i]]
    return {
        "offered_rps": round(rate, 1), "start_ns": start, "sent": run.next, "unfinished": run.outstanding,
        "connections": run.connections, "connects_in_run": run.connects_in_run,
        "error_samples": run.errors[:5], "late_sends": sum(1 for x in lag if x > LATE_NS),
        "worst_send_lag_ms": round(max(lag, default=0) / 1e6, 3),
        "due_ms": [round((d - start) / 1e6, 3) for d in run.due],
        "latency_ms": [round((a - d) / 1e6, 3) if a else -1 for a, d in zip(run.answered_at, run.due, strict=True)],
        "status": run.status,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="http://127.0.0.1:PORT (loopback only)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=32, help="opened before the first send")
    args = parser.parse_args(argv)
    json.dump(uvloop.run(generate(args.url, args.rate, args.duration, args.connections)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
