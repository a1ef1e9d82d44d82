"""The gateway's core: a request's body goes into a pool slot once, a descriptor goes to
the chain's first function, and the descriptor that comes back becomes the response.

Transport- and HTTP-agnostic: ``spright.http`` feeds it from sockets, ``TestClient`` from
memory. Completion is a callback, not a Task per request: the hot path stays short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from spright.descriptor import (
    BODY_JSON,
    BODY_MASK,
    BODY_TEXT,
    DOWN,
    ERROR,
    GATEWAY,
    HAS_RESPONSE_META,
    KIND_MASK,
    NEXT_IN_CHAIN,
    READY,
    REQUEST,
    RESPONSE,
    SIZE,
    Descriptor,
    pack,
    unpack_many,
)
from spright.metrics import BYTES, CONTENT_TYPE, IN, OUT, CounterTable, GatewayMetrics
from spright.pool import MiB, Pool, PoolExhausted, Slot, read_meta, write_meta
from spright.routing import MethodNotAllowed, NotFound, RouteEntry, RouteTable
from spright.transport.base import Endpoint, Outbox, Transport

log = logging.getLogger("spright.gateway")

CONTENT_TYPE_HEADERS = {  # by the descriptor's body type, unless a handler chose one
    BODY_JSON: (b"content-type", b"application/json"),
    BODY_TEXT: (b"content-type", b"text/plain; charset=utf-8"),
}
OCTET_STREAM_HEADER = (b"content-type", b"application/octet-stream")


@dataclass(frozen=True)
class Limits:
    max_body: int = 8 * MiB
    max_header_bytes: int = 16 * 1024
    max_url: int = 8 * 1024
    keepalive_timeout: float = 15.0
    grace: float = 10.0  # how long a failed request's slots stay reserved for late writers


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def error_response(status: int, message: str, **extra: Any) -> Response:
    body = orjson.dumps({"error": message, "status": status, **extra})
    headers = [(b"content-type", b"application/json")]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    return Response(status, body, headers)


class BodyTooLarge(Exception):
    pass


class BodyWriter:
    """Receives a request body straight into a pool slot, growing it for chunked bodies."""

    __slots__ = ("_gateway", "length", "request_id", "slot", "view")

    def __init__(self, gateway: Gateway, expected: int) -> None:
        """Raises BodyTooLarge or PoolExhausted."""
        if expected > gateway.limits.max_body:
            raise BodyTooLarge
        self._gateway = gateway
        self.request_id = gateway.new_request_id()
        self.slot: Slot = gateway.pool.alloc(expected + 1024, self.request_id)
        self.view = gateway.pool.view(self.slot.id)
        self.length = 0

    def write(self, chunk: bytes) -> None:
        end = self.length + len(chunk)
        if end > self._gateway.limits.max_body:
            raise BodyTooLarge
        if end + 1024 > len(self.view):
            self._grow(end * 2 + 1024)
        self.view[self.length : end] = chunk
        self.length = end

    def _grow(self, size: int) -> None:
        pool = self._gateway.pool
        bigger = pool.alloc(min(size, self._gateway.limits.max_body + 1024), self.request_id)
        view = pool.view(bigger.id)
        view[: self.length] = self.view[: self.length]
        pool.free(*self.slot)
        self.slot, self.view = bigger, view

    def release(self) -> None:
        self._gateway.pool.free(*self.slot)


Done = Callable[[Response], None]


class Gateway:
    def __init__(
        self, table: RouteTable, pool: Pool, limits: Limits | None = None, counters: CounterTable | None = None
    ) -> None:
        self.table = table
        self.pool = pool
        self.limits = limits or Limits()
        # counters: the node's table (row 0 is ours); a private one when running alone
        self.metrics = GatewayMetrics(table, counters or CounterTable.create(len(table.endpoints), shared=False))
        self._counts = self.metrics.counts
        self.ready: set[int] = set()
        self.down: set[int] = set()  # functions that died and have not announced READY again
        self._chain_members = [frozenset(chain[:-1]) for chain in table.chains]
        self.on_ready: Callable[[int], None] | None = None
        self._next_id = 0
        # request id -> (done, route, deadline, submitted at)
        self._pending: dict[int, tuple[Done, RouteEntry, float, float]] = {}
        self._failed: dict[int, float] = {}  # request id -> when its slots may be swept
        self._endpoint: Endpoint | None = None
        self._outbox: Outbox | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kernel_routes = False
        self._transport: Transport | None = None

    async def start(self, transport: Transport) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._kernel_routes = transport.resolves_chains
        self._endpoint = await transport.attach(GATEWAY, self.receive)
        self._outbox = Outbox(self._endpoint, self._loop)
        self._ticker = self._loop.call_later(0.1, self._tick)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for request_id in list(self._pending):
            self._finish(request_id, error_response(503, "the node is shutting down"))
        self.metrics.publish()
        if self._endpoint is not None:
            self._endpoint.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def new_request_id(self) -> int:
        self._next_id = self._next_id % 0xFFFFFFFF + 1  # never 0: 0 marks a free slot
        return self._next_id

    def new_body(self, expected: int) -> BodyWriter | Response:
        try:
            return BodyWriter(self, expected)
        except BodyTooLarge:
            return self.refused(error_response(413, f"request body over the limit of {self.limits.max_body} bytes"))
        except PoolExhausted:
            return self.refused(error_response(503, "no free payload space, retry shortly"))

    def refused(self, response: Response) -> Response:
        """Count a request answered before it could be submitted (the HTTP layer's 4xx too)."""
        self.metrics.answered(response.status)
        return response

    def _answer(self, done: Done, response: Response) -> None:
        self.metrics.answered(response.status)
        done(response)

    # -- requests --------------------------------------------------------------------------
    def submit(
        self, method: str, path: str, query: str, headers: dict[str, str], body: BodyWriter, done: Done
    ) -> None:
        """Route the request down its chain; ``done`` gets the response exactly once."""
        try:
            route, params = self.table.match(method, path)
        except NotFound:
            body.release()
            if path == "/metrics" and method == "GET":  # only when the app has no such route
                return self._answer(done, self.exposition())
            return self._answer(done, error_response(404, f"no route for {path}"))
        except MethodNotAllowed as exc:
            body.release()
            response = error_response(405, f"{method} not allowed on {path}", allowed=exc.allowed)
            response.headers.append((b"allow", ", ".join(exc.allowed).encode()))
            return self._answer(done, response)
        if self.down and not self.down.isdisjoint(self._chain_members[route.chain]):
            body.release()
            names = ", ".join(sorted(self.table.name_of(i) for i in self.down))
            return self._answer(done, error_response(503, f"restarting after a crash: {names}"))
        meta = orjson.dumps({"method": method, "path": path, "query": query, "headers": headers, "params": params})
        try:
            if body.length + len(meta) + 4 > len(body.view):
                body._grow(body.length + len(meta) + 4)
            write_meta(body.view, meta)
        except (PoolExhausted, ValueError):
            body.release()
            return self._answer(done, error_response(503, "no free payload space, retry shortly"))
        chain = self.table.chains[route.chain]
        request_id, slot = body.request_id, body.slot
        now = time.monotonic()
        self._pending[request_id] = (done, route, now + route.timeout, now)
        first = NEXT_IN_CHAIN if self._kernel_routes else chain[0]
        out = pack(first, GATEWAY, REQUEST, 0, route.chain, 0, slot.id, body.length, request_id, 0, slot.generation)
        if len(self._pending) == 1:  # the only request in flight: no batch to wait for
            self._outbox.send_now(out)  # type: ignore[union-attr]
        else:
            self._outbox.put(out)  # type: ignore[union-attr]
        self._counts[OUT] += 1  # one per request sent down a chain; requests = this + answered at once

    def exposition(self) -> Response:
        """``GET /metrics``: Prometheus text of every endpoint's counters, the data plane's
        own counters (when it keeps any), pool and in-flight gauges, latency histograms."""
        kernel = None
        if self._transport is not None:
            try:  # a data plane that cannot be read right now must not cost the rest of the scrape
                kernel = type(self._transport).live_counters(self._transport.node_info())
            except Exception:
                log.exception("gateway: reading the data plane's counters failed")
        gauges = {
            "requests_in_flight": ("Requests submitted to a chain and not answered yet.", float(self.in_flight)),
            "pool_slots_in_use": ("Payload slots allocated in the shared-memory pool.", float(self.pool.in_use())),
            "pool_slots": ("Payload slots in the pool, all size classes.", float(self.pool.total)),
        }
        return Response(200, self.metrics.render(gauges, kernel), [(b"content-type", CONTENT_TYPE)])

    def receive(self, data: bytes) -> None:
        self._counts[IN] += len(data) // SIZE
        for d in unpack_many(data):
            kind = d.flags & KIND_MASK
            if kind in (RESPONSE, ERROR):
                self._complete(d)
            elif kind == READY:
                if d.sender in self.down:  # back from a crash: callers may call it again
                    self.down.discard(d.sender)
                    self._tell_workers(READY, d.sender)
                self.ready.add(d.sender)
                if self.on_ready is not None:
                    self.on_ready(d.sender)
            else:
                log.warning("gateway: unexpected descriptor %s", d)

    def _complete(self, d: Descriptor) -> None:
        pending = self._pending.pop(d.request_id, None)
        pool = self.pool
        if pending is None:
            self._failed.pop(d.request_id, None)
            pool.free(d.slot, d.generation)  # a late answer: reclaim its slot now
            return
        flags = d.flags
        if flags & HAS_RESPONSE_META and pool.is_current(d.slot, d.generation):
            headers = self._response_headers(d)
        else:
            headers = [CONTENT_TYPE_HEADERS.get(flags & BODY_MASK, OCTET_STREAM_HEADER)]
        body = pool.take(d.slot, d.generation, d.length)
        if body is None:  # never expected: an answer naming a slot that is not its own
            log.error("gateway: request %d answered with a stale slot: %s", d.request_id, d)
            response = error_response(502, "the chain's answer was lost")
        else:
            response = Response(d.status or (500 if flags & KIND_MASK == ERROR else 200), body, headers)
        self._counts[BYTES] += d.length
        self.metrics.observe(pending[1], response.status, pending[3])
        pending[0](response)

    def _response_headers(self, d: Descriptor) -> list[tuple[bytes, bytes]]:
        """Content type and headers a handler set (``ctx.content_type``, ``ctx.set_header``)."""
        with self.pool.view(d.slot) as view:
            response = orjson.loads(read_meta(view)).get("response", {})
        content_type = CONTENT_TYPE_HEADERS.get(d.flags & BODY_MASK, OCTET_STREAM_HEADER)
        if response.get("content_type"):
            content_type = (b"content-type", response["content_type"].encode())
        return [content_type, *((k.encode(), v.encode()) for k, v in response.get("headers", ()))]

    def _finish(self, request_id: int, response: Response) -> None:
        """End a request that no reply will complete; its slots are swept after a grace time."""
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self._failed[request_id] = time.monotonic() + self.limits.grace
            self.metrics.observe(pending[1], response.status, pending[3])
            pending[0](response)

    def function_died(self, function_id: int) -> None:
        """Fail at once the requests whose chain runs through a worker that just died."""
        name = self.table.name_of(function_id)
        self.ready.discard(function_id)
        self.down.add(function_id)
        self._tell_workers(DOWN, function_id)
        for request_id, (_, route, _, _) in list(self._pending.items()):
            if function_id in self.table.chains[route.chain]:
                self._finish(request_id, error_response(502, f"function {name!r} crashed"))

    def _tell_workers(self, kind: int, function_id: int) -> None:
        """DOWN/READY about ``function_id`` to every live worker: their ctx.calls to it fail
        fast while it is down instead of waiting for a timeout."""
        for worker in self.ready:
            self._outbox.put(pack(worker, GATEWAY, kind, 0, 0, 0, 0, 0, 0, function_id, 0))  # type: ignore[union-attr]

    def _tick(self) -> None:
        now = time.monotonic()
        late = [request_id for request_id, (_, _, deadline, _) in self._pending.items() if deadline <= now]
        for request_id in late:
            self._finish(request_id, error_response(504, "the chain did not answer in time"))
        expired = [request_id for request_id, until in self._failed.items() if until <= now]
        if expired:
            for request_id in expired:
                del self._failed[request_id]
            self.pool.sweep(set(self._pending) | set(self._failed))
        self.metrics.publish()  # readers in other processes see the gateway's row 0.1 s late at most
        self._ticker = self._loop.call_later(0.1, self._tick)  # type: ignore[union-attr]
