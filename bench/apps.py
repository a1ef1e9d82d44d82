"""spright apps for the benchmark scenarios, one App per scenario so each node spawns only the
workers it needs (``spright run bench.apps:noop`` etc.).

``noop`` and ``chain10`` differ only by nine pass-through hops (the last hop of both answers
"hello"), so the low-load latency difference divided by nine is the cost of one hop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

from spright import App, Chain, Context, Function, sse
from spright.data.autoscale import ScalePolicy

HELLO = b"hello"


async def _hello(ctx: Context) -> bytes:
    return HELLO


async def _passthrough(ctx: Context) -> memoryview:
    return ctx.body  # the slot's own bytes: forwarded without a write


# gateway + one function that does nothing but answer
noop = App("bench-noop")
_noop_fn = noop.add_function(_hello, name="noop")
noop.route("/", _noop_fn, methods=["GET", "POST"])

# three hops echoing the POST body in place (the examples/echo.py shape)
echo3 = App("bench-echo3")
_echo = [echo3.add_function(_passthrough, name=f"echo{i}") for i in range(1, 4)]
echo3.route("/", Chain(tuple(_echo)), methods=["POST"])

# ten hops: nine pass-throughs, then the same "hello" answer as noop
chain10 = App("bench-chain10")
_hops: list[Function] = [chain10.add_function(_passthrough, name=f"hop{i}") for i in range(1, 10)]
_hops.append(chain10.add_function(_hello, name="hop10"))
chain10.route("/", Chain(tuple(_hops)), methods=["GET", "POST"])

# the same ten hops hosted by ONE worker process: hops skip the cross-process wake-up
chain10_shared = App("bench-chain10-shared")
_shared: list[Function] = [
    chain10_shared.add_function(_passthrough, name=f"hop{i}", process="chain") for i in range(1, 10)
]
_shared.append(chain10_shared.add_function(_hello, name="hop10", process="chain"))
chain10_shared.route("/", Chain(tuple(_shared)), methods=["GET", "POST"])

# chains of 1..10 pass-through hops on one node (/chain/1 .. /chain/10), for the sweeps in bench.sweep
chains = App("bench-chains")
_links: list[Function] = [chains.add_function(_passthrough, name=f"link{i}") for i in range(1, 11)]
for _length in range(1, 11):
    chains.route(f"/chain/{_length}", Chain(tuple(_links[:_length])), methods=["POST"])

# a caller making n ctx.calls to a no-op callee per request (GET /calls/{n}): the CPU of a call
# round trip between two processes is (CPU at n=8 - CPU at n=0) / 8 (bench.callpath)
calls = App("bench-calls")
_callee = calls.add_function(_hello, name="callee")


async def _caller(ctx: Context) -> bytes:
    for _ in range(ctx.params["n"]):
        await ctx.call("callee", HELLO)
    return HELLO


calls.route("/calls/{n:int}", calls.add_function(_caller, name="caller"), methods=["GET"])

# one CPU-bound function (about 2 ms of pure Python per request), as many instances as asked
# (``--instances burn=N``, up to 4): what a second core buys a function like parking's OCR
BURN_ROUNDS = 40_000


def _spin(rounds: int) -> bytes:
    """Pure Python work that holds the GIL, ``rounds`` loop turns of it."""
    total = 0
    for i in range(rounds):
        total += i * i
    return b"%d" % total


def _burn(ctx: Context) -> bytes:
    return _spin(BURN_ROUNDS)


burn = App("bench-burn")
burn.route("/", burn.add_function(_burn, name="burn", max_instances=4), methods=["GET"])

# a function whose cost varies: most requests ~0.2 ms of Python, one in twenty ~5 ms, drawn
# per request. With 2 instances, how the data plane picks one decides who waits behind a
# long request (``--balance``).
SHORT_ROUNDS, LONG_ROUNDS, LONG_SHARE = 4_000, 100_000, 0.05


def _skewed(ctx: Context) -> bytes:
    return _spin(LONG_ROUNDS if random.random() < LONG_SHARE else SHORT_ROUNDS)


skewed = App("bench-skewed")
skewed.route("/", skewed.add_function(_skewed, name="skewed", max_instances=4), methods=["GET"])

# a function that scales to zero after a second without requests: its next request waits at
# the activator while an instance starts (the cold start ``bench.instances`` measures)
sleepy = App("bench-sleepy")
sleepy.route("/", sleepy.add_function(
    _hello, name="sleepy",
    autoscale=ScalePolicy(min_instances=0, scale_to_zero_grace=1, stable_window=2, panic_window=1)), methods=["GET"])

# streamed answers (bench.streaming, issue 28), one node for the three goals. The chains share
# their first two hops, so /echo3 (the baseline: three hops, the last returning the body) and
# /first (the same two hops, then a generator yielding the body as its first part) differ only
# in how the last function answers. /download?mib=N&kib=K: the same two hops, then a generator
# yielding N MiB in parts of K KiB. /sse?n=N&rate=R: one function, N events R a second, each
# stamped with CLOCK_MONOTONIC (ns) just before it is yielded.
streams = App("bench-streams")
_s1 = streams.add_function(_passthrough, name="s1")
_s2 = streams.add_function(_passthrough, name="s2")
streams.route("/echo3", Chain((_s1, _s2, streams.add_function(_passthrough, name="s3"))), methods=["POST"])


async def _first(ctx: Context) -> AsyncIterator[memoryview | bytes]:
    yield ctx.body
    yield b"\n"


streams.route("/first", Chain((_s1, _s2, streams.add_function(_first, name="first"))), methods=["POST"])

_PART = bytes(range(256)) * 4096  # 1 MiB; a part is a prefix of it (a view: no copy before the slot's)


async def _download(ctx: Context) -> AsyncIterator[memoryview]:
    size = int(ctx.query.get("kib", "1024")) << 10
    total = int(ctx.query.get("mib", "1")) << 20
    part = memoryview(_PART * -(-size // len(_PART)))[:size]
    sent = 0
    while sent < total:
        chunk = part[: min(size, total - sent)]
        yield chunk
        sent += len(chunk)


streams.route("/download", Chain((_s1, _s2, streams.add_function(_download, name="download"))), methods=["GET"])


async def _ticker(ctx: Context) -> AsyncIterator[str]:
    ctx.content_type = "text/event-stream"
    ctx.set_header("cache-control", "no-cache")
    n, gap = int(ctx.query.get("n", "10")), 1 / float(ctx.query.get("rate", "10"))
    start = time.monotonic()
    for i in range(n):
        wait = start + i * gap - time.monotonic()  # on schedule: a late event does not delay the next
        if wait > 0:
            await asyncio.sleep(wait)
        yield sse(f"{i} {time.monotonic_ns()}", id=str(i))


# 1,000 streams at once (and then some): each is an idle generator between its events
streams.route("/sse", streams.add_function(_ticker, name="ticker", concurrency=2048), methods=["GET"])
