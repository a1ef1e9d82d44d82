"""The floor under a hop: cross-process ping-pong with no framework at all.

A parent and a forked child bounce 32 bytes over a socketpair, with blocking sockets and
with a uvloop protocol in the child, on whatever CPUs the scheduler picks and pinned to
one CPU. On a VM a wake-up on another CPU is expensive; this tells how much of spright's
per-hop latency at low load is the machine's and how much is the framework's.
Usage: ``python -m bench.wakeup [ROUNDS]``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import uvloop


def _echo_blocking(sock: socket.socket) -> None:
    while data := sock.recv(64):
        sock.send(data)


def _echo_uvloop(sock: socket.socket) -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

        def connection_lost(self, exc: Exception | None) -> None:
            done.set_result(None)

    async def main() -> None:
        await asyncio.get_running_loop().create_unix_connection(Echo, sock=sock)
        await done

    loop = uvloop.new_event_loop()
    done = loop.create_future()
    loop.run_until_complete(main())


def round_trip_us(child: str, rounds: int, cpu: int | None) -> float:
    parent_sock, child_sock = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent_sock.close()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        (_echo_blocking if child == "blocking" else _echo_uvloop)(child_sock)
        os._exit(0)
    child_sock.close()
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    started = time.perf_counter()
    for _ in range(rounds):
        parent_sock.send(b"x" * 32)
        parent_sock.recv(64)
    elapsed = time.perf_counter() - started
    os.sched_setaffinity(0, before)
    parent_sock.close()
    os.waitpid(pid, 0)
    return elapsed / rounds * 1e6


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    for child in ("blocking", "uvloop"):
        spread = round_trip_us(child, rounds, None)
        pinned = round_trip_us(child, rounds, 1 if os.cpu_count() and os.cpu_count() > 1 else 0)  # type: ignore[operator]
        print(f"{child:8s} round trip: {spread:6.1f} µs free to use both CPUs, {pinned:6.1f} µs pinned to one CPU")
