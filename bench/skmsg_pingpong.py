"""Round trips between endpoints in separate processes (uvloop everywhere): skmsg vs unix.

The gateway side (endpoint 0, this process) sends a batch of descriptors to the echo
endpoints 1..T (spawned processes; ``--targets``), descriptor n to endpoint 1 + n % T, so
with T > 1 every batch mixes destinations; each echo bounces what it got back in one
send(). One batch is in flight at a time. Batch 1 gives the round-trip latency; larger
batches show what batching buys per descriptor. Descriptors name their target as the
real gateway's do (``Transport.addresses``: on skmsg, a chain position the kernel resolves).
Needs root for skmsg. Run as: python -m bench.skmsg_pingpong [--targets 2] [--max-run 1]
(``--max-run 1`` rebuilds the eBPF program with one verdict per descriptor, for comparison).
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

from spright.data.descriptor import SIZE, Descriptor, pack_many
from spright.data.table import RouteTable
from spright.routing import App
from spright.transport import skmsg_program
from spright.transport.base import Transport
from spright.transport.skmsg import SkmsgTransport
from spright.transport.unix import UnixTransport

STOP = 0xFF  # flags value that ends an echo process (the kernel rewrites the sender field)


def _table(targets: int) -> RouteTable:
    app = App("pingpong")
    for i in range(1, targets + 1):
        app.add_function(lambda ctx: None, name=f"echo{i}")
        app.route(f"/{i}", f"echo{i}")  # chain i-1 = (i, gateway)
    return app.compile()


def _echo(transport: Transport, endpoint_id: int, ready: Any) -> None:
    async def main() -> None:
        closed = asyncio.Event()

        def on_receive(data: bytes) -> None:
            back = b"".join(b"\0\0\0\0" + data[i + 4 : i + SIZE] for i in range(0, len(data), SIZE))
            if data[6] == STOP:
                closed.set()
            endpoint.send(back)

        endpoint = await transport.attach(endpoint_id, on_receive)
        ready.set()
        await closed.wait()
        endpoint.close()

    uvloop.run(main())


async def _rounds(transport: Transport, rounds: int, batch: int, targets: int) -> list[float]:
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[None]] = []
    received = 0

    def on_receive(data: bytes) -> None:
        nonlocal received
        received += len(data) // SIZE
        if received >= batch:
            received -= batch
            pending.pop().set_result(None)

    addresses = transport.addresses()  # chain c is (c + 1, gateway): hop 0 names function c + 1

    def descriptor(n: int, flags: int = 0) -> Descriptor:
        chain = n % targets
        return Descriptor(addresses[chain][0], 0, flags, 0, chain, 0, 0, 0, n, 0, 0)

    endpoint = await transport.attach(0, on_receive)
    payload = pack_many([descriptor(n) for n in range(batch)])
    times = []
    for _ in range(rounds):
        done = loop.create_future()
        pending.append(done)
        start = time.perf_counter()
        endpoint.send(payload)
        await done
        times.append(time.perf_counter() - start)
    pending.append(loop.create_future())
    endpoint.send(pack_many([descriptor(n, STOP) for n in range(max(batch, targets))]))
    received -= max(batch, targets) - batch  # the stop batch may be larger than a batch
    await asyncio.wait_for(pending[-1], 5)
    endpoint.close()
    return times


def measure(cls: type[Transport], rounds: int, batch: int, targets: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="spright-bench-") as tmp:
        transport = cls(Path(tmp), _table(targets))
        transport.start()
        try:
            ctx = multiprocessing.get_context("spawn")
            workers = []
            for endpoint_id in range(1, targets + 1):
                ready = ctx.Event()
                worker = ctx.Process(target=_echo, args=(transport, endpoint_id, ready))
                worker.start()
                ready.wait(30)
                workers.append(worker)
            times = uvloop.run(_rounds(transport, rounds, batch, targets))
            for worker in workers:
                worker.join(10)
            return times
        finally:
            transport.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptors", type=int, default=200_000, help="per configuration (sets the rounds)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--targets", type=int, default=1, help="echo processes; >1 mixes destinations")
    parser.add_argument("--max-run", type=int, help="override skmsg's MAX_RUN (1: a verdict per descriptor)")
    args = parser.parse_args()
    if args.max_run:
        skmsg_program.CFLAGS[:] = [f for f in skmsg_program.CFLAGS if not f.startswith("-DMAX_RUN=")] + [
            f"-DMAX_RUN={args.max_run}"]
    transports: list[type[Transport]] = [UnixTransport]
    reason = SkmsgTransport.unavailable_reason()
    if reason is None:
        transports.insert(0, SkmsgTransport)
    else:
        print(f"skmsg skipped: {reason}")
    print(f"{'transport':<8} {'batch':>5} {'p50 us':>8} {'p99 us':>8} {'us/desc':>8} {'desc/s':>10}")
    for batch in args.batches:
        rounds = max(200, args.descriptors // batch)
        for cls in transports:
            times = sorted(measure(cls, rounds, batch, args.targets)[rounds // 10 :])  # drop warm-up
            p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
            mean = statistics.fmean(times)
            rate = 2 * batch / mean  # each descriptor crosses twice
            print(f"{cls.name:<8} {batch:>5} {p50 * 1e6:>8.1f} {p99 * 1e6:>8.1f} {1e6 / rate:>8.2f} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
