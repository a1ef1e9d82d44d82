"""A request whose headers are in, on its way into the pool: its body is received straight into
a slot of its route's security domain, taken as the bytes arrive. Admission first: past the
gateway's ``max_in_flight`` requests down its chains, a request is answered 503 at once, as one
with no route is: no slot, no descriptor, its body counted and dropped, the connection kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote

from spright.data.response import Refused, Response, body_too_large, error_response, no_payload_space
from spright.data.table import RouteEntry, RouteTable
from spright.front.uploads import Host, Upload
from spright.host.pool import PoolExhausted, Slot
from spright.worker.remote import peer_refusal


class Admission(Host, Protocol):
    """What a request on its way in needs of its gateway (spright.front.gateway.Gateway)."""

    max_body: int
    max_stream_body: int | None  # a streamed body's limit (None: none)
    max_in_flight: int
    allocators: list[Callable[[int, int], Slot]]
    receiving: set[int]

    def route(self, method: str, path: str) -> tuple[RouteEntry | None, dict[str, Any], Response | None]: ...

    def refusal(self, response: Response) -> Refused: ...

    def overloaded(self) -> Response: ...

    def new_request_id(self) -> int: ...


SLACK = 1024  # room a new body's slot keeps for the request's metadata
# A body's slot is taken for what arrives, not for what Content-Length promises: at most this much
# up front (a 64 KiB-class slot), the rest once the bytes come. Clients that promise large bodies
# and trickle them cannot pin the pool's few large slots.
UPFRONT = 64 * 1024 - SLACK


class Incoming:
    """A request whose headers are in: routed at once, its body received straight into a pool
    slot of its route's security domain, growing it as the bytes arrive. Its request id counts
    as live meanwhile: no sweep frees the slot under a slow upload. A request no chain will take
    (no route, a built-in page) keeps no slot: its body is counted and dropped.

    On a route whose first function reads its body as it arrives (``stream_body``), the slot
    takes what fits of the first bytes, and the request leaves with them (``streams``: the HTTP
    layer submits it once its first read is in); the rest follows in parts (``upload``,
    spright.front.uploads)."""

    __slots__ = ("_gateway", "_limit", "answer", "expected", "headers", "length", "method", "params", "path", "query",
                 "request_id", "route", "slot", "upload", "view")

    def __init__(self, gateway: Admission, head: RequestHead, expected: int) -> None:
        """Raises Refused (413 over the body limit, 503 when the pool is full)."""
        self._gateway = gateway
        self.method, target, self.query, self.headers = head
        self.path = target if "%" not in target else decoded_path(target, gateway)
        self.expected = expected
        self.length = 0
        self.upload: Upload | None = None
        self.route, self.params, self.answer = gateway.route(self.method, self.path)
        streams = self.route is not None and self.route.stream_body
        self._limit = gateway.max_stream_body if streams else gateway.max_body
        if self._limit is not None and expected > self._limit:
            raise gateway.refusal(body_too_large(self._limit))
        if self.route is not None and (refused := peer_refusal(self.path, self.headers)) is not None:
            raise gateway.refusal(refused)
        self.request_id = gateway.new_request_id()
        self.slot: Slot | None = None
        self.view: memoryview | None = None
        if self.route is not None and self.route.builtin is None:
            if len(gateway.pending) >= gateway.max_in_flight:  # the one admission check a request costs
                self.route, self.answer = None, gateway.overloaded()
                return
            alloc = gateway.allocators[self.route.chain]
            try:
                self.slot = alloc(min(expected or (UPFRONT if streams else 0), UPFRONT) + SLACK, self.request_id)
            except PoolExhausted:
                raise gateway.refusal(no_payload_space()) from None
            self.view = gateway.pool.view(self.slot.id)
            gateway.receiving.add(self.request_id)
            if streams:
                self.upload = Upload(gateway, alloc, self.request_id, self.route.chain)

    def write(self, chunk: bytes | bytearray) -> None:
        """Raises Refused once the body outgrows the limit or the pool (a streamed body's, once
        the request left: its upload is cut, the request answered so)."""
        end = self.length + len(chunk)
        upload = self.upload
        if upload is not None:
            return self._stream(chunk, upload)
        limit = self._gateway.max_body
        if end > limit:
            self.release()
            raise self._gateway.refusal(body_too_large(limit))
        if self.slot is None or self.view is None:  # going nowhere: counted, not kept
            self.length = end
            return
        if end + SLACK > len(self.view):
            pool = self._gateway.pool
            try:
                slot = pool.grow(self.slot, self.length, min(max(end * 2, self.expected), limit) + SLACK,
                                 self.request_id)
            except PoolExhausted:
                self.release()
                raise self._gateway.refusal(no_payload_space()) from None
            self.view.release()
            self.slot, self.view = slot, pool.view(slot.id)
        self.view[self.length : end] = chunk
        self.length = end

    def _stream(self, chunk: bytes | bytearray, upload: Upload) -> None:
        """A streamed body's bytes: what fits in the request's slot until it leaves, then parts."""
        if self._limit is not None and self.length + upload.received + len(chunk) > self._limit:
            if not upload.started:
                self.release()
                raise self._gateway.refusal(body_too_large(self._limit))
            upload.cut(body_too_large(self._limit))
            return
        if not upload.received and not upload.started and self.view is not None:
            room = min(len(chunk), len(self.view) - SLACK - self.length)
            self.view[self.length : self.length + room] = chunk[:room]
            self.length += room
            chunk = chunk[room:]
        if chunk:
            try:
                upload.write(chunk)
            except PoolExhausted:
                self.release()
                raise self._gateway.refusal(no_payload_space()) from None

    def complete(self) -> None:
        """The whole body is in."""
        if self.upload is not None:
            self.upload.finish()

    @property
    def streams(self) -> bool:
        """The body goes after the request, as it arrives (``Gateway.submit`` sends it now)."""
        return self.upload is not None

    def release(self) -> None:
        """The request goes nowhere, or its client went away or broke its body off: the
        slots come back (a streamed body's request that left is answered 400, its function
        cancelled)."""
        upload = self.upload
        if upload is not None and upload.started:
            if not upload.complete:
                upload.cut(error_response(400, "the client broke the request body off before its end"))
            return
        if upload is not None:
            upload.stop()
        if self.view is not None:
            self.view.release()
            self.view = None
        if self.slot is not None:
            self._gateway.pool.free(*self.slot)
            self._gateway.receiving.discard(self.request_id)
            self.slot = None


class Held:
    """A request read while its connection had ``max_pipelined`` in flight: its head and body
    kept as bytes (no pool slot) until there is room to submit it."""

    __slots__ = ("body", "gateway", "head", "method")

    def __init__(self, head: RequestHead, gateway: Admission) -> None:
        self.head, self.method, self.gateway = head, head.method, gateway
        self.body = bytearray()

    def write(self, chunk: bytes) -> None:
        """Raises Refused (413) once the body outgrows the limit."""
        if len(self.body) + len(chunk) > self.gateway.max_body:
            raise self.gateway.refusal(body_too_large(self.gateway.max_body))
        self.body += chunk

    def release(self) -> None:
        self.body.clear()


def decoded_path(target: str, gateway: Admission) -> str:
    """The request target's path percent-decoded (UTF-8), as Starlette routes on it: routes
    match, and handlers get, ``/p/héllo`` for ``/p/h%C3%A9llo``. Raises Refused (400)."""
    try:
        return unquote(target, errors="strict")
    except UnicodeDecodeError:
        raise gateway.refusal(error_response(400, f"the path {target!r} is not UTF-8 once percent-decoded")) from None


QUEUE_DEPTH = 10  # requests admitted per one the entry functions run at once, as Knative's queue-proxy queues


def in_flight_bound(table: RouteTable, slots: int) -> int:
    """``Config.max_in_flight`` when unset: ``QUEUE_DEPTH`` times what the chains' entry functions
    run at once (their concurrency times their most instances: a burst waits in their backlog,
    and a bound reached still shows the autoscaler the need for more), shared among the node's
    gateway processes; at most the pool's slots (a request holds one at least: past them the
    pool's own 503 answers, as it did before any bound)."""
    entries = {chain[0] for chain in table.chains if chain and chain[0]}
    running = sum(table.functions[f - 1].concurrency * table.max_instances(f) for f in entries)
    return max(1, min(QUEUE_DEPTH * running, slots) // max(1, len(table.gateways)))


class RequestHead(NamedTuple):
    method: str
    path: str  # as the request target spells it (percent-encoded); Incoming decodes it
    query: str
    headers: dict[str, str]
