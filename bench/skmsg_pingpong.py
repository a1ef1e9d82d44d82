"""Round trips between two endpoints in two processes (uvloop both): skmsg vs unix.

The gateway side (endpoint 0, this process) sends a batch of descriptors to endpoint 1
(a spawned process), which bounces the whole batch back in one send(); one batch is in
flight at a time. Batch 1 gives the round-trip latency; larger batches show what
batching buys per descriptor. Needs root for skmsg (run as: python bench/skmsg_pingpong.py).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from spright.descriptor import SIZE, Descriptor, pack_many
from spright.transport.base import Transport
from spright.transport.skmsg import SkmsgTransport
from spright.transport.unix import UnixTransport


def _echo(transport: Transport, ready: Any) -> None:
    async def main() -> None:
        closed = asyncio.Event()

        def on_receive(data: bytes) -> None:
            back = b"".join(b"\0\0\0\0" + data[i + 4 : i + SIZE] for i in range(0, len(data), SIZE))
            if back[4:6] == b"\xff\xff":  # sender 0xffff: the benchmark is over
                closed.set()
            endpoint.send(back)

        endpoint = await transport.attach(1, on_receive)
        ready.set()
        await closed.wait()
        endpoint.close()

    uvloop.run(main())


async def _rounds(transport: Transport, rounds: int, batch: int) -> list[float]:
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[None]] = []
    received = 0

    def on_receive(data: bytes) -> None:
        nonlocal received
        received += len(data) // SIZE
        if received >= batch:
            received -= batch
            pending.pop().set_result(None)

    endpoint = await transport.attach(0, on_receive)
    payload = pack_many([Descriptor(1, 0, 0, 0, 0, 0, 0, 0, i, 0, 0) for i in range(batch)])
    times = []
    for _ in range(rounds):
        done = loop.create_future()
        pending.append(done)
        start = time.perf_counter()
        endpoint.send(payload)
        await done
        times.append(time.perf_counter() - start)
    pending.append(loop.create_future())
    endpoint.send(pack_many([Descriptor(1, 0xFFFF, 0, 0, 0, 0, 0, 0, 0, 0, 0)] * batch))
    await asyncio.wait_for(pending[-1], 5)
    endpoint.close()
    return times


def measure(cls: type[Transport], rounds: int, batch: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="spright-bench-") as tmp:
        transport = cls(Path(tmp), [0, 1])
        transport.start()
        try:
            ctx = multiprocessing.get_context("spawn")
            ready = ctx.Event()
            worker = ctx.Process(target=_echo, args=(transport, ready))
            worker.start()
            ready.wait(30)
            times = uvloop.run(_rounds(transport, rounds, batch))
            worker.join(10)
            return times
        finally:
            transport.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    args = parser.parse_args()
    transports: list[type[Transport]] = [UnixTransport]
    reason = SkmsgTransport.unavailable_reason()
    if reason is None:
        transports.insert(0, SkmsgTransport)
    else:
        print(f"skmsg skipped: {reason}")
    print(f"{'transport':<8} {'batch':>5} {'p50 us':>8} {'p99 us':>8} {'desc/s':>10}")
    for batch in args.batches:
        for cls in transports:
            times = sorted(measure(cls, args.rounds, batch)[args.rounds // 10 :])  # drop warm-up
            p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
            rate = 2 * batch / statistics.fmean(times)  # each descriptor crosses twice
            print(f"{cls.name:<8} {batch:>5} {p50 * 1e6:>8.1f} {p99 * 1e6:>8.1f} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
