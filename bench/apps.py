"""spright apps for the benchmark scenarios, one App per scenario so each node spawns only the
workers it needs (``spright run bench.apps:noop`` etc.).

``noop`` and ``chain10`` differ only by nine pass-through hops (the last hop of both answers
"hello"), so the low-load latency difference divided by nine is the cost of one hop.
"""

from __future__ import annotations

import random

from spright import App, Chain, Context, Function
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
