"""A function worker: one uvloop loop, one data-plane endpoint, many concurrent handlers.

The worker sleeps in the loop until its endpoint has descriptors (event-driven, no
polling), builds ``ctx`` over the slot, runs the handler and sends one descriptor onward:
to the chain's next hop, back to a caller, or to the gateway.
"""

from __future__ import annotations

import asyncio
import contextvars
import dis
import inspect
import itertools
import logging
import secrets
import sys
import traceback
from collections import deque
from collections.abc import Coroutine
from time import perf_counter_ns
from typing import Any

import orjson

from spright.context import CallError, Context, HTTPError, Reply, encode
from spright.descriptor import (
    BODY_JSON,
    BODY_MASK,
    CALL,
    DOWN,
    ERROR,
    GATEWAY,
    HAS_RESPONSE_META,
    KIND_MASK,
    NEXT_IN_CHAIN,
    READY,
    REPLY,
    REQUEST,
    RESPONSE,
    SIZE,
    Descriptor,
    pack,
    unpack_many,
)
from spright.metrics import BYTES, CALLS, ERRORS, HANDLED, HANDLER_NS, IN, OUT, ROW_WORDS
from spright.pool import Pool, PoolExhausted, Slot, read_meta, write_meta
from spright.routing import Function, RouteTable
from spright.transport.base import Endpoint, Outbox, Transport

log = logging.getLogger("spright.worker")

if sys.version_info >= (3, 12):

    def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run the handler's first step now: a handler that never awaits costs no loop trip."""
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return loop.create_task(coro)


PAST_DEADLINE = "the chain's timeout passed"  # the cancel message of a handler the worker ended


def never_suspends(handler: Any) -> bool:
    """True for a coroutine function with no await point in its body (no YIELD_VALUE in its
    bytecode): its coroutine finishes on the first step, so it needs neither a Task nor a
    loop iteration. Everything else (sync functions, wrappers, callables) gets a Task."""
    code = getattr(handler, "__code__", None)
    if code is None or not inspect.iscoroutinefunction(handler):
        return False
    return not any(instruction.opname == "YIELD_VALUE" for instruction in dis.get_instructions(code))


class Worker:
    def __init__(self, table: RouteTable, function: Function, pool: Pool, counters: memoryview | None = None) -> None:
        """``counters``: this worker's row of the node's counter table (see spright.metrics)."""
        self.table = table
        self.function = function
        self.id = table.function_id(function.name)
        self.pool = pool
        self.counters = counters if counters is not None else memoryview(bytearray(8 * ROW_WORDS)).cast("Q")
        self._is_async = inspect.iscoroutinefunction(function.handler)
        self._inline = never_suspends(function.handler)
        self._active = 0
        self._backlog: deque[tuple[Descriptor, float]] = deque()  # waiting for a place, since (loop time)
        self._drained: asyncio.Future[None] | None = None  # set while drain() waits
        self._deadlines: dict[asyncio.Task[None], float] = {}  # handlers running as Tasks -> when to end them
        self._expiry: asyncio.TimerHandle | None = None
        self._calls: dict[int, tuple[asyncio.Future[Reply], int]] = {}  # call id -> (future, callee)
        self._down: set[int] = set()  # callees that crashed and are not back yet
        self._call_ids = itertools.count(1)
        self._timeouts = {r.chain: r.timeout for r in sorted(table.routes, key=lambda r: r.timeout)}
        self._endpoint: Endpoint | None = None
        self._outbox: Outbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kernel_routes = False

    async def start(self, transport: Transport) -> None:
        self._loop = asyncio.get_running_loop()
        self._kernel_routes = transport.resolves_chains
        self._endpoint = await transport.attach(self.id, self.receive)
        self._outbox = Outbox(self._endpoint, self._loop)
        self._outbox.put(Descriptor(GATEWAY, self.id, READY, 0, 0, 0, 0, 0, 0, 0, 0).pack())

    async def drain(self) -> None:
        """Wait until every accepted request has finished."""
        if self._active:
            if self._drained is None or self._drained.done():
                self._drained = self._loop.create_future()  # type: ignore[union-attr]
            await self._drained

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._endpoint is not None:
            self._endpoint.close()

    # -- receiving -------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        counters = self.counters
        counters[IN] += len(data) // SIZE
        payload_bytes = 0
        outbox = self._outbox
        outbox.held = True  # what handlers finish inside this call leaves in one send, below  # type: ignore[union-attr]
        try:
            for descriptor in unpack_many(data):
                payload_bytes += descriptor.length
                kind = descriptor.flags & KIND_MASK
                if kind in (REQUEST, CALL):
                    if self._active < self.function.concurrency:
                        self._begin(descriptor)
                    else:
                        self._backlog.append((descriptor, self._loop.time()))  # type: ignore[union-attr]
                elif kind in (REPLY, ERROR):
                    self._settle_call(descriptor)
                elif kind == DOWN:
                    self._callee_died(descriptor.call_id)
                elif kind == READY:
                    self._down.discard(descriptor.call_id)
                else:
                    log.warning("%s: unexpected descriptor %s", self.function.name, descriptor)
        finally:
            outbox.held = False  # type: ignore[union-attr]
            counters[BYTES] += payload_bytes
            if not self._active and self._drained is not None:
                self._now_idle()
            outbox.flush()  # type: ignore[union-attr]

    def _begin(self, descriptor: Descriptor, arrived: float | None = None) -> None:
        """Run the handler; ``arrived``: when a descriptor that waited for a place came in."""
        self._active += 1
        if self._inline:  # what an eager Task would do, minus the Task; in a context of its own
            try:  # noqa: SIM105 (contextlib.suppress adds two Python calls per descriptor)
                contextvars.copy_context().run(self._run(descriptor).send, None)
            except StopIteration:
                pass
        else:
            task = start_task(self._loop, self._run(descriptor))
            if not task.done():
                since = self._loop.time() if arrived is None else arrived  # type: ignore[union-attr]
                self._watch(task, since + self._timeout(descriptor.chain))

    def _finished(self) -> None:
        self._active -= 1
        while self._backlog:
            descriptor, arrived = self._backlog.popleft()
            timeout = self._timeout(descriptor.chain)
            if self._loop.time() - arrived < timeout:  # type: ignore[union-attr]
                self._begin(descriptor, arrived)
                return
            self._shed(descriptor, timeout)
        if not self._active and not self._outbox.held:  # type: ignore[union-attr]
            self._now_idle()
            self._outbox.flush()  # nothing else running: waiting for the loop's turn only adds latency  # type: ignore[union-attr]

    def _timeout(self, chain: int) -> float:
        """The chain's timeout (the longest of its routes'): how long anyone waits on a request."""
        return self._timeouts.get(chain, 30.0)

    def _shed(self, d: Descriptor, timeout: float) -> None:
        """A request that waited past its chain's timeout for a place: the gateway (or the
        caller) has given up on it, so it is answered 504 without running its handler."""
        if self.pool.is_current(d.slot, d.generation):
            self._fail(d, HTTPError(504, f"{self.function.name} was busy: the request waited past the chain's "
                                         f"timeout of {timeout:g} s for a place"))

    def _watch(self, task: asyncio.Task[None], deadline: float) -> None:
        """End ``task`` if it still runs at ``deadline`` (its chain's timeout after the request
        reached this worker: the gateway or the caller has given up on it by then), so a hung
        handler cannot hold one of the function's ``concurrency`` places, nor its slot, for
        good. One timer for all tasks."""
        self._deadlines[task] = deadline
        if self._expiry is None or deadline < self._expiry.when():
            if self._expiry is not None:
                self._expiry.cancel()
            self._expiry = self._loop.call_at(deadline, self._expire)  # type: ignore[union-attr]

    def _expire(self) -> None:
        self._expiry = None
        now = self._loop.time()  # type: ignore[union-attr]
        for task, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[task]
                task.cancel(PAST_DEADLINE)
        if self._deadlines:
            self._expiry = self._loop.call_at(min(self._deadlines.values()), self._expire)  # type: ignore[union-attr]

    def _now_idle(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- running a handler -----------------------------------------------------------------
    async def _run(self, d: Descriptor) -> None:
        try:
            if not self.pool.is_current(d.slot, d.generation):
                return  # the request ended (timeout) and its slot was reclaimed: drop
            ctx = Context(self, d, self.pool.view(d.slot))
            started = perf_counter_ns()
            try:
                result = self.function.handler(ctx)
                if self._is_async or inspect.isawaitable(result):
                    result = await result
                payload, body_flag = encode(result)
                if self.pool.is_current(d.slot, d.generation):
                    self._forward(d, ctx, payload, body_flag)
                else:
                    self._outlived(d)
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError):
                    if exc.args != (PAST_DEADLINE,):
                        raise
                    exc = self._past_deadline(d)
                if self.pool.is_current(d.slot, d.generation):
                    self._fail(d, exc)
                else:
                    self._outlived(d)
            counters = self.counters
            counters[HANDLED] += 1
            counters[HANDLER_NS] += perf_counter_ns() - started
        finally:
            if not self._inline:
                self._deadlines.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._finished()

    def _past_deadline(self, d: Descriptor) -> HTTPError:
        timeout = self._timeout(d.chain)
        log.warning("%s: request %d still running after its chain's timeout (%g s): cancelled", self.function.name,
                    d.request_id, timeout)
        return HTTPError(504, f"{self.function.name} did not finish within the chain's timeout of {timeout:g} s")

    def _outlived(self, d: Descriptor) -> None:
        """The request ended (timed out) while the handler ran and the gateway reclaimed its
        slot: the slot may hold another request by now, so nothing is written to it."""
        log.warning("%s: request %d ended before its handler returned; result dropped", self.function.name,
                    d.request_id)

    def _forward(self, d: Descriptor, ctx: Context, payload: bytes | memoryview, body_flag: int) -> None:
        flags = (d.flags & HAS_RESPONSE_META) | body_flag
        slot, generation = d.slot, d.generation
        if ctx.content_type is not None or ctx.response_headers:  # the handler shaped the HTTP response
            meta = orjson.dumps({**ctx.meta, "response": ctx.response_meta()})
            flags |= HAS_RESPONSE_META
            slot, generation = self._place(d, ctx._slot_view, payload, meta)
        elif payload is not ctx.body:  # returning ctx.body itself costs nothing: it is already there
            slot, generation = self._place(d, ctx._slot_view, payload, None)
        status = ctx.status or d.status
        if d.flags & KIND_MASK == CALL:
            out = pack(d.sender, self.id, REPLY | flags, 0, d.chain, status, slot, len(payload),
                       d.request_id, d.call_id, generation)
        else:
            next_hop = self.table.chains[d.chain][d.hop + 1]  # the gateway after the chain's last hop
            kind = RESPONSE if next_hop == GATEWAY else REQUEST
            out = pack(NEXT_IN_CHAIN if self._kernel_routes else next_hop, self.id, kind | flags, d.hop + 1, d.chain,
                       status, slot, len(payload), d.request_id, 0, generation)
        self._outbox.put(out)  # type: ignore[union-attr]
        self.counters[OUT] += 1

    def _place(self, d: Descriptor, view: memoryview, payload: bytes | memoryview, meta: bytes | None) -> Slot:
        """Write the payload (and new meta, if any) into the slot, or into a larger one."""
        old_meta = read_meta(view)
        needed = len(payload) + len(meta if meta is not None else old_meta) + 4
        if needed > len(view):
            bigger = self._write_new_slot(payload, meta if meta is not None else bytes(old_meta), d.request_id)
            old_meta.release()
            self.pool.free(d.slot, d.generation)
            return bigger
        old_meta.release()
        if meta is not None:
            write_meta(view, meta)
        view[: len(payload)] = payload
        return Slot(d.slot, d.generation)

    def _write_new_slot(self, payload: bytes | memoryview, meta: bytes, owner: int) -> Slot:
        slot = self.pool.alloc(len(payload) + len(meta) + 4, owner)
        with self.pool.view(slot.id) as view:
            view[: len(payload)] = payload
            write_meta(view, meta)
        return slot

    def _fail(self, d: Descriptor, exc: Exception) -> None:
        if isinstance(exc, HTTPError):
            origin = exc.function if isinstance(exc, CallError) else self.function.name
            status, body = exc.status, {"error": exc.detail or "error", "function": origin}
            if isinstance(exc, CallError) or status < 500:
                log.info("%s: %s", self.function.name, str(exc))
        else:
            error_id = secrets.token_hex(6)
            status = 503 if isinstance(exc, PoolExhausted) else 500
            body = {"error": "internal server error", "error_id": error_id, "function": self.function.name}
            trace = "".join(traceback.format_exception(exc))  # text: a kept record must not pin the slot
            log.error("%s failed (error_id=%s)\n%s", self.function.name, error_id, trace)
        payload = orjson.dumps(body)
        view = self.pool.view(d.slot)
        write_meta(view, b"")
        view[: len(payload)] = payload
        dest = d.sender if d.kind == CALL else GATEWAY
        out = Descriptor(dest, self.id, ERROR | BODY_JSON, d.hop, d.chain, status, d.slot, len(payload),
                         d.request_id, d.call_id, d.generation)
        self._outbox.put(out.pack())  # type: ignore[union-attr]
        counters = self.counters
        counters[OUT] += 1
        counters[ERRORS] += 1

    # -- internal calls ---------------------------------------------------------------------
    async def call(self, ctx: Context, function: str, value: Any) -> Reply:
        try:
            target = self.table.function_id(function)
        except LookupError as exc:
            raise HTTPError(500, str(exc)) from None
        if target in self._down:
            raise CallError(503, f"function {function!r} is restarting after a crash", function)
        payload, body_flag = encode(value)
        slot = self._write_new_slot(payload, bytes(read_meta(ctx._slot_view)), ctx.request_id)
        call_id = next(self._call_ids) & 0xFFFFFFFF
        future = self._loop.create_future()  # type: ignore[union-attr]
        self._calls[call_id] = (future, target)
        d = ctx.descriptor
        out = Descriptor(target, self.id, CALL | body_flag, 0, d.chain, 0, slot.id, len(payload),
                         d.request_id, call_id, slot.generation)
        self._outbox.put(out.pack())  # type: ignore[union-attr]
        counters = self.counters
        counters[OUT] += 1
        counters[CALLS] += 1
        try:
            return await asyncio.wait_for(future, self._timeout(d.chain))
        except TimeoutError:
            raise CallError(504, f"call to {function!r} timed out", function) from None
        finally:
            self._calls.pop(call_id, None)

    def _settle_call(self, d: Descriptor) -> None:
        future = self._calls.get(d.call_id, (None, 0))[0]
        body = self.pool.take(d.slot, d.generation, d.length)
        if body is None or future is None or future.done():  # late: the call or its slot is gone
            return
        if d.kind == ERROR:
            error = orjson.loads(body) if body else {}
            origin = error.get("function") or self.table.name_of(d.sender)
            future.set_exception(CallError(d.status or 500, error.get("error", ""), origin))
        else:
            future.set_result(Reply(body, d.flags & BODY_MASK == BODY_JSON))

    def _callee_died(self, callee: int) -> None:
        """Calls waiting on a worker that died fail now (502), not at their timeout; new
        calls to it fail with 503 until the gateway says it is back (READY)."""
        self._down.add(callee)
        name = self.table.name_of(callee)
        for future, target in self._calls.values():
            if target == callee and not future.done():
                future.set_exception(CallError(502, f"function {name!r} crashed", name))
