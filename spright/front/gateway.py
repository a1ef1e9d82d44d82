"""The gateway's core: a request's body goes into a pool slot once, a descriptor goes to
the chain's first function, and the descriptor that comes back becomes the response.

Transport- and HTTP-agnostic: ``spright.front.http`` feeds it from sockets, ``TestClient`` from
memory. Completion is a callback, not a Task per request: the hot path stays short.
A request ends exactly once, in ``_end`` (answered by its chain, failed, timed out); one
answered before it reaches a chain (no route, a built-in page, a refusal) never enters it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from spright.data import descriptor
from spright.data.config import Config
from spright.data.descriptor import (
    BODY_MASK,
    CANCEL,
    CREDIT,
    END,
    ERROR,
    GATEWAY,
    GATEWAY_SHIFT,
    HAS_RESPONSE_META,
    KIND_MASK,
    PART,
    REPLY,
    REQUEST,
    RESPONSE,
    SIZE,
    Descriptor,
    unpack_many,
)
from spright.data.headers import answer_headers
from spright.data.response import Refused, Response, error_response, no_payload_space
from spright.data.table import MethodNotAllowed, NotFound, RouteEntry, RouteTable
from spright.front.incoming import Incoming, RequestHead, in_flight_bound
from spright.front.metrics import GatewayMetrics
from spright.front.recorder import Recorder
from spright.front.streams import Outflow
from spright.front.uploads import Upload, signal
from spright.host.counters import BYTES, DROPPED, IN, OUT, REFUSED_IN_FLIGHT, CounterTable
from spright.host.pool import PoolExhausted, read_meta
from spright.host.pools import NodePool
from spright.transport.base import Endpoint, Outbox, Transport

log = logging.getLogger("spright.front.gateway")

Done = Callable[[Response], None]


class Role(Protocol):
    """What the gateway process does beside requests (spright.front.roles): the first one
    coordinates the node's instances, the others follow it."""

    @property
    def down(self) -> set[int]:
        """Functions with no instance since one crashed: requests through them get 503."""

    def attached(self, gateway: Gateway, outbox: Outbox) -> None:
        """The gateway is on the data plane; ``outbox`` sends from its endpoint."""

    def receive(self, d: Descriptor) -> None:
        """A descriptor for the gateway that is not the answer of a request's chain."""

    def relay(self, d: Descriptor) -> bool:
        """A REPLY, ERROR, PART or END that answers a call the role sent on: relayed (True), or not its own."""

    def instances(self, function_id: int) -> int:
        """Instances of ``function_id`` serving now (for ``/metrics``)."""

    def revisions(self) -> list[tuple[int, ...]]:
        """Per function, the revision each of its slots runs (``LiveInstances.revisions``)."""


class Gateway:
    def __init__(self, table: RouteTable, pool: NodePool, config: Config, role: Role,
                 counters: CounterTable | None = None, index: int = 0, recorder: Recorder | None = None) -> None:
        """``role``: see ``Role``. ``counters``: the node's table (row 0 is the first gateway's);
        a private one when alone. ``index``: which of the node's gateway processes this is.
        ``recorder``: traces requests (spright.front.recorder), when the node traces."""
        self.table = table
        self.index = index
        self.endpoint = table.gateways[index]
        self._owned = index << GATEWAY_SHIFT  # in every request id it hands out
        self.pool = pool
        self.config = config
        self.max_body, self.max_stream_body = config.max_body, config.max_stream_body
        # admission: past this many requests down its chains, a new one is answered 503 (Incoming)
        self.max_in_flight = config.max_in_flight or in_flight_bound(table, pool.total)
        self._overloaded = error_response(503, f"the node has {self.max_in_flight} requests in flight: retry shortly")
        self._role = role
        self._recorder = recorder
        self.metrics = GatewayMetrics(table, counters or CounterTable.create(len(table.endpoints), shared=False),
                                      role.instances, self.endpoint, role.revisions)
        self._counts = self.metrics.counts
        self._chain_members = [frozenset(chain[:-1]) for chain in table.chains]
        # per chain: alloc(size, owner) in the pool of the chain's security domain
        self.allocators = [pool.allocator(table.functions[chain[0] - 1].domain) for chain in table.chains]
        self._pages: dict[str, Callable[[], Response]] = {"metrics": self.metrics_page}  # routing.BUILTINS
        self._next_id = 0
        # request id -> (done, route, deadline, submitted at)
        self.pending: dict[int, tuple[Done, RouteEntry, float, float]] = {}
        self._failed: dict[int, float] = {}  # request id -> when its slots may be swept
        self.receiving: set[int] = set()  # request ids whose bodies are arriving (Incoming)
        self.streams: dict[int, Outflow] = {}  # request id -> its answer, streamed (its head is out)
        self.uploads: dict[int, Upload] = {}  # request id -> its body, streamed after it (spright.front.uploads)
        # a sweep once a crashed worker's slots can no longer be written: the slots of ctx.calls it held
        # belong to requests that may have ended normally since, which no failed request's expiry would sweep
        self._sweep_at: float | None = None
        self._endpoint: Endpoint | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._transport: Transport | None = None
        # set by start(): requests are submitted only once it is attached
        self._loop: asyncio.AbstractEventLoop
        self._first_steps: tuple[tuple[int, int], ...]
        self._outbox: Outbox

    async def start(self, transport: Transport) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._first_steps = tuple(steps[0] for steps in self.table.steps(transport.addresses()))
        transport.carry(self.pool)
        transport.instances.watch(self.metrics.counters.in_flight)
        self._endpoint = await transport.attach(self.endpoint, self.receive)
        self._outbox = Outbox(self._endpoint, self._loop)
        self._role.attached(self, self._outbox)
        self._ticker = self._loop.call_later(self.config.tick, self._tick)

    def shed(self) -> None:
        """The drain's time is up: every request still in flight is answered 503 now."""
        for request_id in list(self.pending):
            self._end(request_id, error_response(503, "the node is shutting down"), failed=True)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.shed()
        self.metrics.publish()
        if self._recorder is not None:
            self._recorder.close()
        if self._endpoint is not None:
            self._endpoint.close()

    async def closed(self) -> None:
        """After ``close()``: the data plane has released the gateway's endpoint."""
        if self._endpoint is not None:
            await self._endpoint.closed()

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def new_request_id(self) -> int:
        self._next_id = self._next_id % 0x0FFFFFFF + 1  # never 0: 0 marks a free slot
        return self._next_id | self._owned

    def open_request(self, head: RequestHead, expected: int) -> Incoming:
        """A request whose headers are in, ``expected`` body bytes announced; raises Refused (413, 503)."""
        return Incoming(self, head, expected)

    def route(self, method: str, path: str) -> tuple[RouteEntry | None, dict[str, Any], Response | None]:
        """(route, path parameters, None), or (None, {}, the answer) when no route takes it."""
        try:
            route, params = self.table.match(method, path)
        except NotFound:
            return None, {}, error_response(404, f"no route for {path}")
        except MethodNotAllowed as exc:
            response = error_response(405, f"{method} not allowed on {path}", allowed=exc.allowed)
            response.raw_headers.append((b"allow", ", ".join(exc.allowed).encode()))
            return None, {}, response
        return route, params, None

    def refusal(self, response: Response) -> Refused:
        """Count ``response`` as a request answered before any chain, to raise as Refused."""
        self.metrics.answered(response.status)
        return Refused(response)

    def overloaded(self) -> Response:
        """A request past ``max_in_flight``: its 503 (answered as a request no chain takes), counted."""
        self.metrics.refused[REFUSED_IN_FLIGHT] += 1
        return self._overloaded

    def _answer_now(self, done: Done, response: Response) -> None:
        """Answer a request that goes down no chain (no route, a built-in page)."""
        self.metrics.answered(response.status)
        done(response)

    # -- requests --------------------------------------------------------------------------
    def submit(self, request: Incoming, done: Done) -> None:
        """Send the request down its route's chain; ``done`` gets the response exactly once."""
        route, slot = request.route, request.slot
        if route is None or slot is None:
            request.release()
            if route is not None and route.builtin is not None:
                return self._answer_now(done, self._pages[route.builtin]())
            assert request.answer is not None  # no route: its 404 or 405
            return self._answer_now(done, request.answer)
        down = self._role.down
        if down and not down.isdisjoint(self._chain_members[route.chain]):
            request.release()
            names = ", ".join(sorted(self.table.name_of(i) for i in down))
            return self._answer_now(done, error_response(503, f"restarting after a crash: {names}"))
        request_id = request.request_id
        # a traced request's headers carry the gateway's traceparent on to every hop
        flags = REQUEST | self._recorder.begin(request_id, route, request.headers) if self._recorder else REQUEST
        meta = orjson.dumps({"method": request.method, "path": request.path, "query": request.query,
                             "headers": request.headers, "params": request.params, "route": route.index})
        try:
            slot = self.pool.set_meta(slot, request.length, meta, request.request_id)
        except (PoolExhausted, ValueError):
            request.release()
            if self._recorder is not None:
                self._recorder.discard(request_id)
            return self._answer_now(done, no_payload_space())
        if request.view is not None:
            request.view.release()  # the body is in
        now = time.monotonic()
        self.pending[request_id] = (done, route, now + route.timeout, now)
        self.receiving.discard(request_id)
        first, _ = self._first_steps[route.chain]
        out = descriptor.hop(first, GATEWAY, flags, 0, route.chain, 0, slot.id, slot.generation,
                             request.length, request_id)
        if len(self.pending) == 1:  # the only request in flight: no batch to wait for
            self._outbox.send_now(out)
        else:
            self._outbox.put(out)
        self._counts[OUT] += 1  # one per request sent down a chain; requests = this + answered at once
        if request.upload is not None:
            request.upload.start()  # its body follows

    def metrics_page(self) -> Response:
        """The built-in ``GET /metrics`` (GatewayMetrics.page)."""
        totals = self._recorder.totals() if self._recorder is not None else None
        return self.metrics.page(self._transport, self.in_flight, self.pool, totals)

    def receive(self, data: bytes) -> None:
        self._counts[IN] += len(data) // SIZE
        for d in unpack_many(data):
            kind = d.flags & KIND_MASK
            if kind == RESPONSE:
                self._complete(d)
            elif d.call_id and kind in (REPLY, ERROR, PART, END) and self._role.relay(d):
                continue  # the answer to a call the activator held and sent on (its parts too)
            elif kind == PART:
                self._part(d)
            elif kind == END:
                self._stream_end(d)
            elif kind == ERROR:
                self._complete(d)
            elif kind == REPLY:
                self.drop(d, "a reply to no call sent on by the activator")
            elif kind in (CREDIT, CANCEL) and not d.call_id:  # from the function reading a streamed body
                signal(self, d)
            else:
                self._role.receive(d)

    def drop(self, d: Descriptor, why: str) -> None:
        """A descriptor no correct function sends: logged, counted, dropped."""
        self._counts[DROPPED] += 1
        log.warning("gateway: dropped a descriptor: %s: %s", why, d)

    def _complete(self, d: Descriptor) -> None:
        """The chain answered: the slot's payload becomes the response."""
        pool = self.pool
        request_id = d.request_id
        if request_id not in self.pending:
            self._failed.pop(request_id, None)
            pool.free(d.slot, d.generation)  # a late answer: reclaim its slot now
            return
        if self.streams and request_id in self.streams:  # a streaming handler failed midway
            pool.free(d.slot, d.generation)
            log.warning("gateway: request %d: its streamed answer failed midway (%d): cut short", request_id, d.status)
            return self._end(request_id, error_response(d.status or 500, "the stream failed"), failed=True)
        flags = d.flags
        headers = self._response_headers(d)
        body = pool.take(d.slot, d.generation, d.length)
        if body is None:  # never expected: an answer naming a slot that is not its own
            log.error("gateway: request %d answered with a stale slot: %s", d.request_id, d)
            return self._end(request_id, error_response(502, "the chain's answer was lost"), failed=True)
        self._counts[BYTES] += d.length
        self._end(request_id, Response(d.status or (500 if flags & KIND_MASK == ERROR else 200), body, headers))

    # -- streamed answers (spright.front.streams) --------------------------------------------
    def _part(self, d: Descriptor) -> None:
        request_id = d.request_id
        pending = self.pending.get(request_id)
        if pending is None or d.call_id:  # a late part (the client went away, a timeout), or a call's: freed
            self.pool.free(d.slot, d.generation)
            return
        outflow = self.streams.get(request_id)
        if outflow is None:
            outflow = self.streams[request_id] = Outflow(self, d)
        done, route, _, since = pending  # the route's timeout runs between parts, not over the stream
        self.pending[request_id] = (done, route, time.monotonic() + route.timeout, since)
        outflow.put(d)

    def _stream_end(self, d: Descriptor) -> None:
        outflow = self.streams.get(d.request_id) if not d.call_id else None  # a call's: no request's
        if outflow is not None:
            outflow.finish(d)
        elif d.request_id in self.pending and not d.call_id:  # a stream of no part: an empty answer, its head
            headers = self._response_headers(d)
            self.pool.free(d.slot, d.generation)
            self._end(d.request_id, Response(d.status or 200, b"", headers))
        else:
            self._failed.pop(d.request_id, None)
            self.pool.free(d.slot, d.generation)

    def send(self, record: bytes) -> None:
        """For a stream (spright.front.streams.Host): a descriptor in the next batch."""
        self._outbox.put(record)

    def stream_head(self, outflow: Outflow, first: Descriptor) -> None:
        """The first part of a streamed answer is in: the response's head, the parts to follow."""
        pending = self.pending[first.request_id]
        pending[0](Response(first.status or 200, b"", self._response_headers(first), outflow))

    def cut(self, request_id: int, response: Response) -> None:
        """A streamed body failed (spright.front.uploads): the request ends with ``response``."""
        self._end(request_id, response, failed=True)

    def stream_over(self, request_id: int, status: int, failed: bool) -> None:
        """A streamed answer ended (``failed``: cut short, by its client or a stale part)."""
        self.streams.pop(request_id, None)
        self._ended(request_id, Response(status), failed)

    def _response_headers(self, d: Descriptor) -> list[tuple[bytes, bytes]]:
        """Content type and headers: by the body's type, or as a handler set them (in the slot's metadata)."""
        if not d.flags & HAS_RESPONSE_META or not self.pool.is_current(d.slot, d.generation):
            return answer_headers(d.flags & BODY_MASK, None)
        with self.pool.view(d.slot) as view:
            return answer_headers(d.flags & BODY_MASK, orjson.loads(read_meta(view)).get("response"))

    def _end(self, request_id: int, response: Response, failed: bool = False) -> None:
        """The one way a submitted request ends. ``failed``: no answer of its chain freed its
        slots (they may still be written by a late hop), so they are swept after a grace time.
        A streamed answer whose head is out is cut short instead (``response`` is not sent)."""
        done = self._ended(request_id, response, failed)
        if done is None:
            return
        outflow = self.streams.pop(request_id, None) if self.streams else None
        if outflow is None:
            done(response)
        else:
            outflow.abort()

    def _ended(self, request_id: int, response: Response, failed: bool) -> Done | None:
        """A request's end, counted; None if it had ended already, else who gets its answer."""
        pending = self.pending.pop(request_id, None)
        if pending is None:
            return None
        if failed:
            self._failed[request_id] = time.monotonic() + self.config.grace
        if self.uploads and (upload := self.uploads.pop(request_id, None)) is not None:
            upload.stop()  # what is left of its body goes nowhere now
        self.metrics.observe(pending[1], response.status, pending[3])
        if self._recorder is not None and (records := self._recorder.end(request_id, response)) is not None:
            self.metrics.observe_runs(records, self._recorder.names)
        return pending[0]

    def sweep_later(self) -> None:
        """A worker crashed: once it can no longer be writing, sweep the slots no request holds
        (those of ctx.calls it held belong to requests that may have ended normally since)."""
        self._sweep_at = time.monotonic() + self.config.grace

    def fail_through(self, function_id: int) -> None:
        """No instance of ``function_id`` serves: fail at once the requests whose chain runs through it."""
        name = self.table.name_of(function_id)
        self.sweep_later()
        for request_id, (_, route, _, _) in list(self.pending.items()):
            if function_id in self.table.chains[route.chain]:
                self._end(request_id, error_response(502, f"function {name!r} crashed", function=name), failed=True)

    def _tick(self) -> None:
        now = time.monotonic()
        late = [request_id for request_id, (_, _, deadline, _) in self.pending.items() if deadline <= now]
        for request_id in late:
            self._end(request_id, error_response(504, "the chain did not answer in time"), failed=True)
        expired = [request_id for request_id, until in self._failed.items() if until <= now]
        for request_id in expired:
            del self._failed[request_id]
        crashed = self._sweep_at is not None and self._sweep_at <= now
        if crashed:
            self._sweep_at = None
        if expired or crashed:
            self.pool.sweep(set(self.pending) | set(self._failed) | self.receiving, self.index)
        self.metrics.publish()  # readers in other processes see the gateway's row one tick late at most
        self._ticker = self._loop.call_later(self.config.tick, self._tick)
