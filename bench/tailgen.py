"""An open-loop generator clean enough to measure a sub-millisecond tail.

``bench.openloop.single`` (aiohttp, asyncio.sleep between sends, in the process that also samples
CPU) adds its own tail: the event loop's timers have millisecond granularity, so a request due
0.2 ms from now leaves up to a millisecond late, and aiohttp's per-request allocations set off the
generator's own garbage collections. Latency runs from the scheduled send time, so both land in
the figure as if the server had caused them. This one is built so it does not:

- a process of its own (``python -m bench.tailgen URL ...``, JSON on stdout), on uvloop;
- sends are woken by a timerfd armed at the next due time in absolute nanoseconds (not the loop's
  millisecond timers), with the process's timer slack at its minimum;
- raw keep-alive connections (httptools parses the answers), one request in flight on each,
  opened before the first send; a request that finds none idle opens another (counted), so no
  request waits behind another's answer;
- the objects of start-up frozen and the collector off for the run: nothing it allocates per
  request forms cycles, and a collection would stall the sends.

It reports latency from the scheduled send (what a server is charged with), the send lag (when
each request left minus when it was due: the generator's own share) and the service time (answer
minus actual send), so a clean run shows its lag far below the latency it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import random
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import uvloop

from apps.loadkit import require_loopback
from bench.openloop import cdf, schedule

CLOCK_MONOTONIC = 1  # time.monotonic_ns() reads the same clock
TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME = os.O_NONBLOCK, os.O_CLOEXEC, 1
PR_SET_TIMERSLACK = 29
LATE_NS = 100_000  # a send this late is counted: a tenth of the millisecond the tail is judged by


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Alarm:
    """A one-shot timerfd on CLOCK_MONOTONIC at an absolute time (Python 3.11 has no os.timerfd_*)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self._libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # 1 ns: wake-ups as asked, not 50 µs later
        self._spec = _Itimerspec()  # one, rewritten at every arm: a send costs no allocation here
        self._ref, self._settime = ctypes.byref(self._spec), self._libc.timerfd_settime

    def arm(self, when_ns: int) -> None:
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(max(when_ns, 1), 1_000_000_000)
        if self._settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):  # several wake-ups may share one read
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.index = -1  # the request in flight, -1 when idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.run.failed(self, f"HttpParserError: {exc}")

    def on_message_complete(self) -> None:
        self.run.answered(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.failed(self, f"connection lost: {exc!r}")


class Run:
    """Sends ``request`` at each of ``due`` (monotonic ns) and records when each answer came."""

    def __init__(self, host: str, port: int, request: bytes, due: Sequence[int]) -> None:
        self.host, self.port, self.request, self.due = host, port, request, due
        self.sent = [0] * len(due)
        self.answered_at = [0] * len(due)
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.idle: list[Connection] = []
        self.connections = 0
        self.connects_in_run = 0  # requests that found no idle connection and opened one
        self.next = 0
        self.outstanding = 0
        self.finished = asyncio.Event()

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        self.connections += 1
        return protocol

    async def open(self, count: int) -> None:
        self.idle = list(await asyncio.gather(*(self.connect() for _ in range(count))))

    def tick(self, alarm: Alarm) -> None:
        """The alarm went off: send everything due by now, then arm it for the next one."""
        alarm.clear()
        now = time.monotonic_ns()
        while self.next < len(self.due) and self.due[self.next] <= now:
            self.send(self.next)
            self.next += 1
            now = time.monotonic_ns()
        if self.next < len(self.due):
            alarm.arm(self.due[self.next])
        elif not self.outstanding:
            self.finished.set()

    def send(self, index: int) -> None:
        self.outstanding += 1
        if self.idle:
            self.write(self.idle.pop(), index)
        else:
            self.connects_in_run += 1
            task = asyncio.ensure_future(self.connect())
            task.add_done_callback(lambda t: self._connected(t, index))

    def _connected(self, task: asyncio.Future[Connection], index: int) -> None:
        if task.exception() is not None:
            self.errors.append(f"connect: {task.exception()!r}")
            self._settled()
        elif task.result().transport is None or task.result().transport.is_closing():  # closed by the node first
            self.errors.append("connection closed before its request was sent")
            self._settled()
        else:
            self.write(task.result(), index)

    def write(self, connection: Connection, index: int) -> None:
        assert connection.transport is not None
        connection.index = index
        self.sent[index] = time.monotonic_ns()
        connection.transport.write(self.request)

    def answered(self, connection: Connection, status: int) -> None:
        if connection.index < 0:
            return
        self.answered_at[connection.index] = time.monotonic_ns()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        connection.index = -1
        self.idle.append(connection)
        self._settled()

    def failed(self, connection: Connection, problem: str) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.index >= 0:
            self.errors.append(problem)
            connection.index = -1
            self._settled()

    def _settled(self) -> None:
        self.outstanding -= 1
        if not self.outstanding and self.next >= len(self.due):
            self.finished.set()

    def close(self) -> None:
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()


def percentiles(ns: list[int]) -> dict[str, float | int]:
    """Milliseconds at the ranks the tail goal speaks of."""
    if not ns:
        return {"count": 0}
    ordered = sorted(ns)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1e6, 3)

    return {"count": len(ordered), "mean_ms": round(sum(ordered) / len(ordered) / 1e6, 3), "p50_ms": at(50),
            "p90_ms": at(90), "p99_ms": at(99), "p99.9_ms": at(99.9), "max_ms": round(ordered[-1] / 1e6, 3)}


async def drive(run: Run, offsets: list[float], patience: float, announce: bool = False) -> int:
    """Send ``run``'s requests at ``offsets`` (seconds from the start, 50 ms from now) and wait
    for the answers, ``patience`` seconds past the start at most; returns the start (ns,
    time.monotonic_ns). ``announce``: print the start on stderr, for a harness that times what
    it does from it. Nothing is collected meanwhile: start-up's objects are frozen, and the few
    objects per request are acyclic."""
    loop, alarm = asyncio.get_running_loop(), Alarm()
    gc.collect()
    gc.freeze()
    gc.disable()
    start = time.monotonic_ns() + 50_000_000
    if announce:
        print(f"start_ns {start}", file=sys.stderr, flush=True)
    run.due = [start + round(offset * 1e9) for offset in offsets]
    run.sent, run.answered_at = [0] * len(offsets), [0] * len(offsets)
    loop.add_reader(alarm.fd, run.tick, alarm)
    alarm.arm(run.due[0])
    try:
        await asyncio.wait_for(run.finished.wait(), 0.05 + patience)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(alarm.fd)
        alarm.close()
        run.close()
        gc.enable()
    return start


def build_request(host: str, port: int, method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body is not None:
        head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("ascii") + (body or b"")


async def generate(url: str, method: str, path: str, body: bytes | None, rate: float, duration: float, *,
                   poisson: bool = False, connections: int = 32, grace: float = 10.0, seed: int = 1) -> dict[str, Any]:
    parts = urlsplit(require_loopback(url))
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    offsets = schedule(rate, duration, poisson, random.Random(seed))
    run = Run(host, port, build_request(host, port, method, path, body), [])
    await run.open(connections)
    cpu0 = time.process_time()
    start = await drive(run, offsets, duration + grace)
    cpu = time.process_time() - cpu0
    wall = (time.monotonic_ns() - start) / 1e9
    done = [i for i, t in enumerate(run.answered_at) if t]
    lag = [run.sent[i] - run.due[i] for i in range(run.next) if run.sent[i]]
    latency = [run.answered_at[i] - run.due[i] for i in done]
    return {
        "offered_rps": round(rate, 1), "arrivals": "poisson" if poisson else "uniform", "scheduled": len(offsets),
        "sent": run.next, "requests": len(done), "unfinished": run.outstanding,
        "achieved_rps": round(len(done) / wall, 1), "errors": run.next - len(done),
        "error_samples": run.errors[:5], "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "connections": run.connections, "connects_in_run": run.connects_in_run,
        "late_sends": sum(1 for x in lag if x > LATE_NS), "late_ns": LATE_NS,
        "generator_cpu_s": round(cpu, 3),
        "latency": percentiles(latency), "send_lag": percentiles(lag),
        "service": percentiles([run.answered_at[i] - run.sent[i] for i in done]),
        "cdf_ms": cdf([x / 1e9 for x in latency]),
    }


def measure(url: str, rate: float, duration: float, body: bytes | None) -> dict[str, Any]:
    """One run of this generator in a process of its own (it must not share a loop or a GC with
    the harness): its JSON report."""
    argv = [sys.executable, "-m", "bench.tailgen", url, "--rate", str(rate), "--duration", str(duration)]
    if body is not None:
        argv += ["--method", "POST", "--body-bytes", str(len(body))]
    done = subprocess.run(argv, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=duration + 60, check=False)
    if done.returncode != 0:
        return {"error": f"bench.tailgen exited {done.returncode}: {done.stderr[-500:]}"}
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("url", help="http://127.0.0.1:PORT (loopback only)")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", default="/")
    parser.add_argument("--body-bytes", type=int, default=None, help="a POST body of this many 'x'")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--poisson", action="store_true", help="exponential gaps instead of uniform ones")
    parser.add_argument("--connections", type=int, default=32, help="opened before the first send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--floor", action="store_true", help="only the machine's timer wake-up lag, no requests")
    return parser.parse_args(argv)


def wakeup_floor(rate: float, duration: float) -> dict[str, Any]:
    """The lag of the same timerfd wake-ups with nothing sent: what the machine adds to any
    generator that sleeps between sends (on a VM whose idle vCPUs halt, most of the lag)."""
    alarm, poller = Alarm(), select.epoll()
    poller.register(alarm.fd, select.EPOLLIN)
    gap, lags = round(1e9 / rate), []
    due = time.monotonic_ns() + 1_000_000
    for _ in range(int(rate * duration)):
        due += gap
        alarm.arm(due)
        poller.poll()
        alarm.clear()
        lags.append(time.monotonic_ns() - due)
    alarm.close()
    return {"rate": rate, "wakeups": len(lags), "late": sum(1 for x in lags if x > LATE_NS), "late_ns": LATE_NS,
            "lag": percentiles(lags)}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.floor:
        print(json.dumps(wakeup_floor(args.rate, args.duration)))
        return
    body = b"x" * args.body_bytes if args.body_bytes is not None else None
    out = uvloop.run(generate(args.url, args.method, args.path, body, args.rate, args.duration,
                              poisson=args.poisson, connections=args.connections, seed=args.seed))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
