"""A queue-proxy-like sidecar in front of one function of the http data plane (``--sidecar``).

As Knative's queue-proxy sits between the ingress and the user container, this process
listens on the function's public port, counts every request, lets at most ``concurrency``
of them (0: no limit) be in flight to the function at once and queues the rest, and
forwards each over one pipelined keep-alive connection to the function's own port. Every
hop through it pays one more HTTP parse, copy and loopback TCP round: what the comparison
measures. Its counters live in a small file (``counters_path``) the node's readers map, so
``spright stats`` and the gateway's ``/metrics`` show them without asking this process.

Hops on the http data plane are one-way: the function answers a hop once it has taken the
descriptor (not when its handler ends), so the limit bounds hand-offs in flight; how many
handlers run at once is the worker's own ``concurrency=``.

``python -m spright.transport.sidecar --port P --upstream U --counters FILE [--concurrency N] [--function NAME]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import mmap
import signal
from pathlib import Path
from typing import cast

COUNTERS = ("requests", "in_flight", "queued", "failed")  # failed: answered 502, the function unreachable
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"


def read_counters(path: Path) -> dict[str, int]:
    """A sidecar's counters, from any process (zeros before it first wrote them)."""
    data = path.read_bytes()[: 8 * len(COUNTERS)].ljust(8 * len(COUNTERS), b"\0")
    return {name: int.from_bytes(data[8 * i : 8 * i + 8], "little") for i, name in enumerate(COUNTERS)}


class _Reply:
    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class _Downstream(asyncio.Protocol):
    """One sender's connection: requests parsed and handed to the proxy, answers written
    back in request order (pipelining) as the function's answers come in."""

    def __init__(self, proxy: Sidecar) -> None:
        import httptools

        self._proxy = proxy
        self._parser = httptools.HttpRequestParser(self)
        self._parse_error = httptools.HttpParserError
        self._url = b""
        self._body: list[bytes] = []
        self._order: collections.deque[_Reply] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._parse_error:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, chunk: bytes) -> None:
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        body, url = b"".join(self._body), self._url
        self._body, self._url = [], b""
        reply = _Reply()
        self._order.append(reply)
        if self._parser.get_method() == b"GET" and url == b"/metrics":
            self.answer(reply, self._proxy.metrics())
        else:
            self._proxy.submit(b"POST %s HTTP/1.1\r\nhost: spright\r\ncontent-length: %d\r\n\r\n%s"
                               % (url, len(body), body), self, reply)

    def answer(self, reply: _Reply, data: bytes) -> None:
        reply.data = data
        while self._order and self._order[0].data is not None:
            ready = self._order.popleft().data
            if self.transport is not None and ready:
                self.transport.write(ready)


class _Upstream(asyncio.Protocol):
    """The connection to the function: each complete response answers the oldest request."""

    def __init__(self, proxy: Sidecar) -> None:
        import httptools

        self._proxy = proxy
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        self._proxy.answered(b"HTTP/1.1 %d \r\ncontent-length: 0\r\n\r\n" % self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._proxy.upstream_lost()


class Sidecar:
    """The proxy's state: counters, the requests waiting for a place, those at the function."""

    def __init__(self, upstream_port: int, concurrency: int, counters_path: Path) -> None:
        self._upstream_port = upstream_port
        self._concurrency = concurrency
        self._file = counters_path.open("w+b")
        self._file.truncate(8 * len(COUNTERS))
        self._map = mmap.mmap(self._file.fileno(), 8 * len(COUNTERS))
        self._counts = memoryview(self._map).cast("Q")
        self._waiting: collections.deque[tuple[bytes, _Downstream, _Reply]] = collections.deque()
        self._at_function: collections.deque[tuple[_Downstream, _Reply]] = collections.deque()
        self._upstream: _Upstream | None = None
        self._connecting: list[bytes] | None = None  # requests written while the connection opens

    async def listen(self, port: int) -> asyncio.AbstractServer:
        """Serve senders on ``port`` (loopback) until the server is closed."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Downstream(self), "127.0.0.1", port, reuse_address=True)

    def metrics(self) -> bytes:
        text = "".join(f"spright_sidecar_{name} {self._counts[i]}\n" for i, name in enumerate(COUNTERS))
        return b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (
            len(text), text.encode())

    def submit(self, request: bytes, downstream: _Downstream, reply: _Reply) -> None:
        self._counts[0] += 1
        if self._concurrency and len(self._at_function) >= self._concurrency:
            self._waiting.append((request, downstream, reply))
            self._counts[2] = len(self._waiting)
            return
        self._forward(request, downstream, reply)

    def _forward(self, request: bytes, downstream: _Downstream, reply: _Reply) -> None:
        self._at_function.append((downstream, reply))
        self._counts[1] = len(self._at_function)
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.write(request)
        elif self._connecting is not None:
            self._connecting.append(request)
        else:
            self._connecting = [request]
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: _Upstream(self), "127.0.0.1", self._upstream_port)
        except OSError:
            self._connecting = None
            self.upstream_lost()
            return
        waiting, self._connecting = self._connecting or [], None
        self._upstream = upstream
        if upstream.transport is not None:
            upstream.transport.write(b"".join(waiting))

    def answered(self, answer: bytes) -> None:
        downstream, reply = self._at_function.popleft()
        downstream.answer(reply, answer)
        if self._waiting:
            self._forward(*self._waiting.popleft())
            self._counts[2] = len(self._waiting)
        self._counts[1] = len(self._at_function)

    def upstream_lost(self) -> None:
        """The function went away (a crash, a restart): what it had not answered gets a 502,
        as a queue-proxy answers when its container dies; what waits goes on the next connection."""
        self._upstream = None
        while self._at_function:
            downstream, reply = self._at_function.popleft()
            self._counts[3] += 1
            downstream.answer(reply, _BAD_GATEWAY)
        self._counts[1] = 0
        while self._waiting and (not self._concurrency or len(self._at_function) < self._concurrency):
            self._forward(*self._waiting.popleft())
        self._counts[2] = len(self._waiting)

    def close(self) -> None:
        self._counts.release()
        self._map.close()
        self._file.close()


async def serve(port: int, upstream_port: int, concurrency: int, counters_path: Path) -> None:
    loop = asyncio.get_running_loop()
    proxy = Sidecar(upstream_port, concurrency, counters_path)
    stop = asyncio.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node's supervisor decides when we stop (SIGTERM)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await proxy.listen(port)
    try:
        await stop.wait()
    finally:
        server.close()
        proxy.close()
        counters_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spright.transport.sidecar", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the function's public port (senders connect here)")
    parser.add_argument("--upstream", type=int, required=True, help="the function's own port")
    parser.add_argument("--counters", type=Path, required=True, help="file the counters live in")
    parser.add_argument("--concurrency", type=int, default=0, help="requests at the function at once (0: no limit)")
    parser.add_argument("--function", default="", help="the function's name (for ps)")
    args = parser.parse_args(argv)
    import uvloop

    from spright.host.procs import die_with_parent, name_process

    die_with_parent()
    name_process(f"sidecar {args.function} :{args.port}")
    uvloop.run(serve(args.port, args.upstream, args.concurrency, args.counters))


if __name__ == "__main__":
    main()
