"""Streamed answers (issue 28): the three goals on one node (``bench.apps:streams``, skmsg),
each against a baseline measured in the same run.

1. ``ttfb``: one request at a time on a keep-alive connection, alternating blocks of the two
   routes: ``POST /echo3`` (three hops, 64 B body, answered whole: the baseline, its full
   latency) and ``POST /first`` (the same two first hops, then a generator yielding the body as
   its first part): the time from the send to the response's first byte (its head) and to the
   first byte of the first part. Goal: the first part's p50 (and p99) within 100 µs of echo3's.
   A blocking socket client, the collector off: what it adds is the same on both routes.
2. ``download``: ``GET /download`` through three hops (two pass-throughs, then a generator
   yielding ``--kib`` parts, 1 MiB by default: the largest slot class under ``max_body``, so the
   per-part cost (a descriptor, a CREDIT per four, a syscall each side) is spread over the most
   bytes, and eight of them in flight per stream is 8 MiB: a pipe's worth), read by a blocking
   socket decoding the chunks (byte-exact, every chunk one part). Sizes ``--sizes`` MiB (a small
   warm-up first, so slot pages touched once are not charged to the first size): throughput
   (goal >= 500 MB/s), the node's memory sampled every 100 ms (RSS, anonymous, shared memory and
   PSS summed over the node's processes; goal: the peak at 1 GiB within ``MEMORY_SLACK`` of the
   peak at 256 MiB), pool slots in use sampled during and read after (goal 0).
3. ``sse``: ``--clients`` connections to ``GET /sse``, each a stream of ``--rate`` events a
   second for ``--seconds``, their starts spread over one event gap (the events evenly spread
   in time). Every event carries its number and CLOCK_MONOTONIC at its yield (one clock for every
   process of a host); the client (``--client-procs`` processes of uvloop protocols parsing with
   httptools) stamps each receipt: delay = receipt - stamp. Goal: every event delivered, in
   order, each stream complete; p99 delay <= 20 ms. The clients' own CPU share and event-loop lag
   are measured beside it: a client that falls behind shows there, not as the node's delay.

    python -m bench.streaming [--only ttfb,download,sse] [--seconds 60] [--clients 1000]

Results: bench/results/streaming-<stamp>.json; ``python -m bench.report --doc`` renders them.
The client shares the machine's two cores with the node: the figures are the pair's.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import httptools
import uvloop

from bench.procs import Server, descendants, free_ports, machine_busy_seconds

ROOT = Path(__file__).resolve().parent.parent
APP = "bench.apps:streams"
BODY = b"x" * 64  # the echo3 scenario's body in bench.paper and bench.tail
MiB = 1 << 20
MEMORY_SLACK = 16 * MiB  # allowed growth of the node's peak memory from 256 MiB streamed to 1 GiB
GOALS = {"ttfb_over_echo3_us": 100.0, "download_mb_s": 500.0, "sse_p99_ms": 20.0}
SAMPLE_EVERY = 0.02  # seconds between memory samples during a download (1 GiB takes about a second)


def percentiles(values: list[int] | array.array[int], scale: float = 1e3) -> dict[str, float | int]:
    """``values`` in ns as ``scale`` ns units (1e3: µs, 1e6: ms) at the ranks the goals name."""
    if not len(values):
        return {"count": 0}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / scale, 3)

    return {"count": len(ordered), "mean": round(sum(ordered) / len(ordered) / scale, 3), "p50": at(50),
            "p90": at(90), "p99": at(99), "p99.9": at(99.9), "max": round(ordered[-1] / scale, 3)}


def quiet(max_load: float, patience: float) -> float:
    """Wait (at most ``patience`` s) for the 1-minute load average to drop under ``max_load``
    (a shared machine: others' test runs); the load then, stored beside the figures."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        print(f"  load {os.getloadavg()[0]:.2f} > {max_load}: waiting", file=sys.stderr, flush=True)
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))
    return round(os.getloadavg()[0], 2)


def node(transport: str, workdir: Path) -> tuple[Server, int]:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "spright", "run", APP, "--transport", transport, "--port", str(port)]
    server = Server(argv, [port], workdir / "streaming-node.log", ROOT)
    server.start(timeout=90)
    return server, port


def slots_in_use(port: int) -> float | None:
    from spright.testing import node_metric

    try:
        return node_metric(port, "spright_pool_slots_in_use")
    except (KeyError, OSError):
        return None


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# -- 1. time to first byte -----------------------------------------------------------------------
def _post(port: int, path: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


def _whole(sock: socket.socket, request: bytes) -> int:
    """One unstreamed exchange: ns from the send to the whole answer (Content-Length framed)."""
    start = time.monotonic_ns()
    sock.sendall(request)
    buf, end, length = b"", -1, 0
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the node closed the connection")
        buf += data
        if end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            if not buf.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"echo3 answered {buf[:end]!r}")
            head = buf[:end + 2].lower()
            at = head.index(b"content-length:") + 15
            length = int(head[at:head.index(b"\r\n", at)])
        if len(buf) >= end + 4 + length:
            return time.monotonic_ns() - start


def _streamed(sock: socket.socket, request: bytes) -> tuple[int, int, int]:
    """One streamed exchange: ns from the send to the first byte of the answer (its head), to
    the first byte of its first part, and to its end (the last chunk)."""
    start = time.monotonic_ns()
    sock.sendall(request)
    buf, head_at, first_at = b"", 0, 0
    while True:
        data = sock.recv(65536)
        now = time.monotonic_ns()
        if not data:
            raise ConnectionError("the node closed the connection")
        buf += data
        if not head_at:
            head_at = now
        if not first_at:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                line = buf.find(b"\r\n", end + 4)
                if line >= 0 and len(buf) > line + 2:
                    first_at = now
                    if not buf.startswith(b"HTTP/1.1 200") or b"transfer-encoding: chunked" not in buf[:end].lower():
                        raise RuntimeError(f"/first answered {buf[:end]!r}")
        if first_at and buf.endswith(b"\r\n0\r\n\r\n"):
            return head_at - start, first_at - start, now - start


def cpu_per_request(server: Server, port: int, requests: int) -> dict[str, dict[str, float]]:
    """Each route alone, ``requests`` one at a time: the CPU (µs per request) of every node
    process that used any, and the client's; where a difference in latency comes from."""
    out: dict[str, dict[str, float]] = {}
    for route, exchange in (("echo3", _whole), ("first", _streamed)):
        request = _post(port, "/" + route)
        with _connect(port) as sock:
            before, client = server.cpu(), time.process_time()
            for _ in range(requests):
                exchange(sock, request)
            client = time.process_time() - client
            after = server.cpu()
        used = {pid: after.get(pid, 0) - before.get(pid, 0) for pid in server.pids}
        out[route] = {str(pid): round(cpu / requests * 1e6, 1) for pid, cpu in used.items() if cpu > 0}
        out[route]["client"] = round(client / requests * 1e6, 1)
    return out


def ttfb(port: int, samples: int, block: int = 50, warmup: int = 200) -> dict[str, Any]:
    """Closed loop, one request at a time, alternating blocks of ``block`` of each route."""
    echo_request, first_request = _post(port, "/echo3"), _post(port, "/first")
    echo: list[int] = []
    head: list[int] = []
    first: list[int] = []
    whole: list[int] = []
    with _connect(port) as a, _connect(port) as b:
        for _ in range(warmup):
            _whole(a, echo_request)
            _streamed(b, first_request)
        gc.collect()
        gc.disable()
        cpu0, wall0 = time.process_time(), time.monotonic()
        try:
            while len(echo) < samples:
                for _ in range(min(block, samples - len(echo))):
                    echo.append(_whole(a, echo_request))
                for _ in range(block if len(first) + block <= samples else samples - len(first)):
                    h, f, w = _streamed(b, first_request)
                    head.append(h)
                    first.append(f)
                    whole.append(w)
        finally:
            gc.enable()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    out: dict[str, Any] = {"samples": samples, "block": block, "echo3_us": percentiles(echo),
                           "first_head_us": percentiles(head), "first_part_us": percentiles(first),
                           "first_whole_us": percentiles(whole), "client_cpu_share": round(cpu / wall, 3)}
    for rank in ("p50", "p99"):
        out[f"difference_{rank}_us"] = round(out["first_part_us"][rank] - out["echo3_us"][rank], 1)
    return out


# -- 2. a large download ---------------------------------------------------------------------------
def _memory(pids: list[int]) -> dict[str, int]:
    """Bytes summed over ``pids``: VmRSS, RssAnon, RssShmem (/proc/PID/status), Pss (smaps_rollup)."""
    sums = {"rss": 0, "anon": 0, "shmem": 0, "pss": 0}
    fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssShmem:": "shmem"}
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                name, *rest = line.split()
                if name in fields:
                    sums[fields[name]] += int(rest[0]) * 1024
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    sums["pss"] += int(line.split()[1]) * 1024
    return sums


def names(pids: list[int]) -> dict[str, str]:
    """Each process's command line, shortened: which pid is a gateway, which a worker."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            found[str(pid)] = title.removeprefix("spright: ")[:60]
    return found


class Sampler(threading.Thread):
    """The node's memory every ``SAMPLE_EVERY`` s, and its pool's slots in use every fifth sample."""

    def __init__(self, pids: list[int], port: int) -> None:
        super().__init__(daemon=True)
        self.pids, self.port = pids, port
        self.samples: list[dict[str, float]] = []
        self.slots: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        start, n = time.monotonic(), 0
        while not self.stopping.is_set():
            self.samples.append({"t": round(time.monotonic() - start, 2), **_memory(self.pids)})
            if n % 5 == 0 and (used := slots_in_use(self.port)) is not None:
                self.slots.append(used)
            n += 1
            self.stopping.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def fetch(port: int, mib: int, kib: int) -> dict[str, Any]:
    """``GET /download``, its chunks decoded as they come, nothing kept: bytes, chunks, timing."""
    sock = _connect(port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    cpu0 = time.thread_time()
    start = time.monotonic_ns()
    sock.sendall(f"GET /download?mib={mib}&kib={kib} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the node closed the connection before the head")
        head += data
    first_at = time.monotonic_ns()
    head, _, rest = head.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or b"transfer-encoding: chunked" not in head.lower():
        raise RuntimeError(f"/download answered {head!r}")
    total = chunks = remaining = 0
    sizes: set[int] = set()
    line = bytearray()
    state = "size"  # size line, data, the CRLF after data, done
    pending: bytes | memoryview = rest
    while state != "done":
        if not pending:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError(f"the node closed the connection after {total} bytes")
            pending = view[:n]
        if state == "data":
            take = min(remaining, len(pending))
            remaining -= take
            total += take
            pending = pending[take:]
            if not remaining:
                state = "crlf"
                line.clear()
        else:  # a line: a chunk's size, the CRLF after its data, or the last chunk's
            at = bytes(pending[:4096]).find(b"\n")
            if at < 0:
                line += pending
                pending = b""
                continue
            line += pending[:at + 1]
            pending = pending[at + 1:]
            text = bytes(line).strip()
            line.clear()
            if state == "crlf":
                if text:
                    raise RuntimeError(f"a chunk's data ran past its size: {text[:40]!r}")
                state = "size"
            elif state == "size":
                size = int(text.split(b";")[0], 16)
                if size:
                    sizes.add(size)
                    chunks += 1
                    remaining = size
                    state = "data"
                else:
                    state = "trailer"
            elif not text:  # the blank line after the last chunk
                state = "done"
    end = time.monotonic_ns()
    cpu = time.thread_time() - cpu0
    sock.close()
    seconds = (end - start) / 1e9
    return {"bytes": total, "chunks": chunks, "chunk_sizes": sorted(sizes)[-3:], "seconds": round(seconds, 3),
            "mb_s": round(total / seconds / 1e6, 1), "ttfb_ms": round((first_at - start) / 1e6, 3),
            "client_cpu_share": round(cpu / seconds, 3)}


def download(server: Server, port: int, mib: int, kib: int) -> dict[str, Any]:
    pids = descendants(server.process.pid) if server.process else server.pids
    before_memory, before_cpu = _memory(pids), server.cpu()
    sampler = Sampler(pids, port)
    sampler.start()
    try:
        got = fetch(port, mib, kib)
    finally:
        sampler.stop()
    after_cpu = server.cpu()
    cpu = {str(pid): round(after_cpu.get(pid, 0) - before_cpu.get(pid, 0), 2) for pid in server.pids}
    series, after_memory = sampler.samples, _memory(pids)
    peak = {key: max([s[key] for s in series] + [before_memory[key], after_memory[key]])
            for key in ("rss", "anon", "shmem", "pss")}
    got.update(mib=mib, kib=kib, exact=got["bytes"] == mib * MiB and got["chunks"] == -(-mib * 1024 // kib),
               memory_before=before_memory, memory_peak=peak, memory_after=after_memory,
               memory_series=[[s["t"], round(s["rss"] / MiB, 1), round(s["pss"] / MiB, 1)] for s in series],
               slots_in_use_during_max=max(sampler.slots, default=None),
               slots_in_use_after=slots_in_use(port), node_cpu_s_by_pid=cpu,
               node_cpu_s=round(sum(cpu.values()), 2))
    return got


# -- 3. many SSE streams ---------------------------------------------------------------------------
class SseStream(asyncio.Protocol):
    """One client of ``GET /sse``: its events' order checked, each one's delay recorded."""

    def __init__(self, run: SseRun) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.now = 0
        self.expected = 0
        self.first_stamp = 0
        self.pending = b""
        self.complete = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.now = time.monotonic_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.run.problem(f"HttpParserError: {exc}")

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() != 200:
            self.run.problem(f"status {self.parser.get_status_code()}")

    def on_body(self, body: bytes) -> None:
        buf = self.pending + body if self.pending else body
        start = 0
        while (end := buf.find(b"\n\n", start)) >= 0:
            event = buf[start:end]
            start = end + 2
            number, stamp = event[event.rindex(b"data: ") + 6:].split(b" ")
            i, sent = int(number), int(stamp)
            run = self.run
            if i != self.expected:
                run.out_of_order += 1
            if not i:
                self.first_stamp = sent
            self.expected = i + 1
            run.delays.append(self.now - sent)
            run.received_at.append(self.now)
            run.lateness.append(sent - self.first_stamp - i * run.gap_ns)  # the handler's, behind its schedule
            run.events += 1
        self.pending = buf[start:]

    def on_message_complete(self) -> None:
        self.complete = True
        self.run.ended(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self.run.problem(f"connection lost mid-stream: {exc!r}")
            self.run.ended(self)


class SseRun:
    def __init__(self, events: int, rate: float) -> None:
        self.n, self.gap_ns = events, round(1e9 / rate)
        self.delays: array.array[int] = array.array("q")
        self.received_at: array.array[int] = array.array("q")
        self.lateness: array.array[int] = array.array("q")
        self.events = self.out_of_order = 0
        self.complete = self.short = 0
        self.problems: list[str] = []
        self.open = 0
        self.finished = asyncio.Event()

    def problem(self, text: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(text)

    def ended(self, stream: SseStream) -> None:
        if stream.complete and stream.expected == self.n and not stream.pending:
            self.complete += 1
        else:
            self.short += 1
        self.open -= 1
        if stream.transport is not None:
            stream.transport.close()
        if not self.open:
            self.finished.set()


async def _lag(samples: list[int], stop: asyncio.Event) -> None:
    """The client's own event-loop lag: how late a 10 ms sleep wakes."""
    while not stop.is_set():
        due = time.monotonic_ns() + 10_000_000
        await asyncio.sleep(0.01)
        samples.append(time.monotonic_ns() - due)


async def sse_clients(port: int, clients: int, rate: float, seconds: float, spread: float,
                      offset: float) -> dict[str, Any]:
    """``clients`` streams, their requests sent ``spread``/``clients`` apart starting ``offset`` s in."""
    loop = asyncio.get_running_loop()
    events = max(1, round(rate * seconds))
    run = SseRun(events, rate)
    streams: list[SseStream] = []
    for at in range(0, clients, 50):  # in batches: the listen backlog is not a thousand deep
        opened = await asyncio.gather(*(loop.create_connection(lambda: SseStream(run), "127.0.0.1", port)
                                        for _ in range(min(50, clients - at))))
        streams += [protocol for _, protocol in opened]
    run.open = len(streams)
    request = f"GET /sse?n={events}&rate={rate} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    gc.collect()
    gc.freeze()
    gc.disable()
    stop, lags = asyncio.Event(), cast(list[int], [])
    lag = asyncio.ensure_future(_lag(lags, stop))
    cpu0, wall0 = time.process_time(), time.monotonic()
    start = loop.time() + 0.05 + offset
    for k, stream in enumerate(streams):
        assert stream.transport is not None
        loop.call_at(start + k * spread / len(streams), stream.transport.write, request)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.finished.wait(), 0.05 + offset + spread + seconds + 30)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    stop.set()
    await lag
    gc.enable()
    for stream in streams:
        if stream.transport is not None:
            stream.transport.close()
    return {"clients": len(streams), "events_each": events, "expected": events * len(streams),
            "received": run.events, "out_of_order": run.out_of_order, "complete": run.complete,
            "short": run.short + run.open, "problems": run.problems, "delays": run.delays,
            "received_at": run.received_at, "lateness": run.lateness, "client_cpu_s": round(cpu, 2),
            "client_wall_s": round(wall, 2), "client_loop_lag_ms": percentiles(lags, 1e6)}


RAW = ("delays", "received_at", "lateness")  # per event, in the order received
WINDOW_S = 5  # the delay's p99 per window of this many seconds: a tail at the start or all along


def timeline(delays: array.array[int], received_at: array.array[int],
             machine: list[tuple[int, float, float]]) -> list[list[float | None]]:
    """Per ``WINDOW_S`` s from the first receipt: [its start (s), events, p99 delay (ms), the cores
    the whole machine was busy, the node's share of them] (``machine``: samples of (monotonic
    ns, machine busy s, node CPU s)): a tail where other load had the cores, or all along."""
    if not received_at:
        return []
    first = min(received_at)
    windows: dict[int, list[int]] = {}
    for delay, at in zip(delays, received_at, strict=True):
        windows.setdefault(int((at - first) / 1e9 // WINDOW_S), []).append(delay)
    rows: list[list[float | None]] = []
    for k, inside in sorted(windows.items()):
        start, end = first + k * WINDOW_S * 10**9, first + (k + 1) * WINDOW_S * 10**9
        span = [m for m in machine if start <= m[0] <= end]
        busy = node = None
        if len(span) >= 2:
            seconds = (span[-1][0] - span[0][0]) / 1e9
            busy, node = (round((span[-1][i] - span[0][i]) / seconds, 2) for i in (1, 2))
        rows.append([k * WINDOW_S, len(inside), percentiles(inside, 1e6)["p99"], busy, node])
    return rows


def sse_client_main(argv: list[str]) -> None:
    """``python -m bench.streaming --sse-client PORT CLIENTS RATE SECONDS SPREAD OFFSET OUT``:
    one client process; its summary on stdout, each event's figures (ns, int64) in OUT.<name> for
    each name of ``RAW``."""
    port, clients, rate, seconds, spread, offset, out = argv
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    got = uvloop.run(sse_clients(int(port), int(clients), float(rate), float(seconds), float(spread), float(offset)))
    for name in RAW:
        with open(f"{out}.{name}", "wb") as f:
            got.pop(name).tofile(f)
    json.dump(got, sys.stdout)


def sse(server: Server, port: int, clients: int, rate: float, seconds: float, procs: int,
        workdir: Path) -> dict[str, Any]:
    """``clients`` SSE streams from ``procs`` client processes (each its share, their starts
    interleaved over one event gap)."""
    spread = 1 / rate
    shares = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
    before_cpu, busy0, wall0 = server.cpu(), machine_busy_seconds(), time.monotonic()
    running = []
    for k, share in enumerate(shares):
        argv = [sys.executable, "-m", "bench.streaming", "--sse-client", str(port), str(share), str(rate),
                str(seconds), str(spread), str(k * spread / clients), str(workdir / f"sse-{k}")]
        running.append(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    machine_by_second = []  # [monotonic ns, machine busy s, node CPU s] each second: who had the cores when
    while any(process.poll() is None for process in running) and time.monotonic() - wall0 < seconds + 180:
        machine_by_second.append((time.monotonic_ns(), machine_busy_seconds(), sum(server.cpu().values())))
        time.sleep(1.0)
    outs = []
    for process in running:
        stdout, stderr = process.communicate(timeout=60)
        if process.returncode:
            raise RuntimeError(f"an SSE client exited {process.returncode}: {stderr[-800:]}")
        outs.append(json.loads(stdout))
    wall, busy = time.monotonic() - wall0, machine_busy_seconds() - busy0
    after_cpu = server.cpu()
    raw: dict[str, array.array[int]] = {name: array.array("q") for name in RAW}
    for k in range(procs):
        for name, into in raw.items():
            into.frombytes((workdir / f"sse-{k}.{name}").read_bytes())
    delays, lateness = raw["delays"], raw["lateness"]
    node_cpu = {str(pid): round(after_cpu.get(pid, 0) - before_cpu.get(pid, 0), 2) for pid in server.pids}
    client_cpu = sum(o["client_cpu_s"] for o in outs)
    summed = {key: sum(o[key] for o in outs) for key in ("clients", "expected", "received", "out_of_order",
                                                         "complete", "short")}
    return {**summed, "rate": rate, "seconds": seconds, "events_each": outs[0]["events_each"], "client_procs": procs,
            "delay_ms": percentiles(delays, 1e6), "handler_lateness_ms": percentiles(lateness, 1e6),
            "delay_p99_ms_by_window": timeline(delays, raw["received_at"], machine_by_second),
            "client_cpu_share": round(client_cpu / max(o["client_wall_s"] for o in outs), 3),
            "client_loop_lag_ms": [o["client_loop_lag_ms"] for o in outs],
            "problems": [p for o in outs for p in o["problems"]][:10],
            "node_cpu_s_by_pid": node_cpu, "node_cpu_share": round(sum(node_cpu.values()) / wall, 3),
            "machine_busy_share": round(busy / wall, 3), "slots_in_use_after": slots_in_use(port)}


# -- the run ---------------------------------------------------------------------------------------
def verdict(report: dict[str, Any]) -> dict[str, bool]:
    checks: dict[str, bool] = {}
    limit = GOALS["ttfb_over_echo3_us"]
    if (t := report.get("ttfb")) is not None:
        checks[f"TTFB (first part) p50 <= echo3 p50 + {limit:g} µs"] = t["difference_p50_us"] <= limit
        checks[f"TTFB (first part) p99 <= echo3 p99 + {limit:g} µs"] = t["difference_p99_us"] <= limit
    if (runs := report.get("download")) is not None:
        largest = max(runs, key=lambda r: r["mib"])
        checks[f"{largest['mib']} MiB download >= {GOALS['download_mb_s']:g} MB/s"] = (
            largest["mb_s"] >= GOALS["download_mb_s"])
        checks["every download byte-exact, one chunk per part"] = all(r["exact"] for r in runs)
        sized = sorted((r for r in runs if not r.get("warmup")), key=lambda r: r["mib"])
        if len(sized) >= 2:
            growth = sized[-1]["memory_peak"]["rss"] - sized[0]["memory_peak"]["rss"]
            checks[f"node memory peak at {sized[-1]['mib']} MiB within {MEMORY_SLACK // MiB} MiB of the peak at "
                   f"{sized[0]['mib']} MiB"] = growth <= MEMORY_SLACK
        checks["no slot in use after the downloads"] = all(r["slots_in_use_after"] == 0 for r in runs)
    if (s := report.get("sse")) is not None:
        checks["every SSE event delivered, in order, every stream complete"] = (
            s["received"] == s["expected"] and not s["out_of_order"] and s["complete"] == s["clients"])
        checks[f"SSE p99 delivery delay <= {GOALS['sse_p99_ms']:g} ms"] = (
            s["delay_ms"].get("p99", float("inf")) <= GOALS["sse_p99_ms"])
        checks["no slot in use after the SSE streams"] = s["slots_in_use_after"] == 0
    return checks


def machine() -> dict[str, Any]:
    import spright.native

    return {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "hot_path": spright.native.state(), "date": time.strftime("%Y-%m-%d %H:%M")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--sse-client":
        sse_client_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", default="ttfb,download,sse", help="comma list of ttfb, download, sse")
    parser.add_argument("--transport", default="skmsg")
    parser.add_argument("--samples", type=int, default=3000, help="ttfb: requests of each route")
    parser.add_argument("--sizes", default="256,1024", help="download: MiB, comma list (the memory goal compares "
                                                            "the first and the last)")
    parser.add_argument("--warmup-mib", type=int, default=64, help="download: streamed first, not judged")
    parser.add_argument("--kib", type=int, default=1024, help="download: the part size")
    parser.add_argument("--clients", type=int, default=1000, help="sse: concurrent streams")
    parser.add_argument("--rate", type=float, default=10.0, help="sse: events a second per stream")
    parser.add_argument("--seconds", type=float, default=60.0, help="sse: how long each stream lasts")
    parser.add_argument("--client-procs", type=int, default=1, help="sse: client processes")
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="before each part, wait for the 1-minute load average to drop under this")
    parser.add_argument("--patience", type=float, default=300, help="... for at most this many seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the node inherits it: a thousand connections
    report: dict[str, Any] = {"transport": args.transport, "app": APP, "machine": machine(), "goals": GOALS,
                              "memory_slack_mib": MEMORY_SLACK // MiB, "load_before": {}}
    with tempfile.TemporaryDirectory(prefix="spright-streaming-") as tmp:
        server, port = node(args.transport, Path(tmp))
        try:
            if "ttfb" in only:
                report["load_before"]["ttfb"] = quiet(args.max_load, args.patience)
                report["ttfb"] = ttfb(port, args.samples)
                report["ttfb"]["cpu_us_per_request"] = cpu_per_request(server, port, args.samples)
                t = report["ttfb"]
                print(f"ttfb: echo3 p50/p99 {t['echo3_us']['p50']}/{t['echo3_us']['p99']} µs, first part "
                      f"{t['first_part_us']['p50']}/{t['first_part_us']['p99']} µs (head "
                      f"{t['first_head_us']['p50']}/{t['first_head_us']['p99']})", flush=True)
            if "download" in only:
                report["load_before"]["download"] = quiet(args.max_load, args.patience)
                runs = []
                if args.warmup_mib:
                    runs.append({**download(server, port, args.warmup_mib, args.kib), "warmup": True})
                for mib in (int(m) for m in args.sizes.split(",")):
                    runs.append(download(server, port, mib, args.kib))
                    r = runs[-1]
                    print(f"download {mib} MiB in {args.kib} KiB parts: {r['mb_s']:,.0f} MB/s, node RSS peak "
                          f"{r['memory_peak']['rss'] / MiB:.0f} MiB (PSS {r['memory_peak']['pss'] / MiB:.0f}), "
                          f"slots in use after {r['slots_in_use_after']}", flush=True)
                report["download"] = runs
            if "sse" in only:
                report["load_before"]["sse"] = quiet(args.max_load, args.patience)
                report["sse"] = sse(server, port, args.clients, args.rate, args.seconds, args.client_procs, Path(tmp))
                s = report["sse"]
                print(f"sse: {s['clients']} clients x {s['events_each']} events: {s['received']:,}/{s['expected']:,} "
                      f"received, {s['out_of_order']} out of order, delay p50/p99 {s['delay_ms'].get('p50')}/"
                      f"{s['delay_ms'].get('p99')} ms, client CPU {s['client_cpu_share']:.0%}", flush=True)
        finally:
            report["node_processes"] = names(server.pids)
            report["stop"] = server.stop()
    report["checks"] = verdict(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"streaming-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    for check, ok in report["checks"].items():
        print(f"  {'met   ' if ok else 'MISSED'} {check}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
