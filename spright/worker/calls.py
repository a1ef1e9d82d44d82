"""What a worker needs to run ``ctx.call``: one deadline timer for many waits, and the
calls in flight with the callees known to be down.

``Deadlines`` replaces an ``asyncio.wait_for`` (a timer handle and a wrapper per await)
with one timer per worker, armed for the earliest deadline; handlers past their chain's
timeout and calls past theirs share it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Hashable
from time import perf_counter_ns
from typing import Any, cast

import orjson

from spright.data import descriptor
from spright.data.descriptor import (
    BODY_JSON,
    BODY_MASK,
    CALL,
    ERROR,
    IN_PARTS,
    KIND_MASK,
    MAX_DEPTH,
    PART,
    TRACED,
    Descriptor,
)
from spright.data.function import Function
from spright.data.table import RouteTable
from spright.host.counters import CALLS, OUT
from spright.host.pool import Pool
from spright.transport.base import Outbox
from spright.worker.context import CallError, Context, Reply, descriptor_of, encode, raw_meta
from spright.worker.inflows import CallStream, Inflow
from spright.worker.tracing import WorkSpans

Expire = Callable[[Hashable], None]


def depth_of(d: Descriptor) -> int:
    """How many handlers of its function wait on the one running ``d``, each holding one of
    the function's places: a call's depth (``descriptor.call``), none for a chain's hop."""
    return d.hop if d.flags & KIND_MASK == CALL else 0


def too_deep(name: str, concurrency: int, depth: int) -> CallError:
    """A call of ``name`` to itself that could never run: the ``depth`` handlers waiting on
    it, its caller included, hold ``depth`` of the function's places, so with ``depth`` >=
    ``concurrency`` it would wait in the backlog until the route's timeout for a place none
    of them gives back (with several instances too: the call may land on the caller's own).
    Refused at once: 508 Loop Detected."""
    return CallError(508, f"{name!r} called itself {depth + 1} deep but has only {concurrency} places "
                          f"(concurrency={concurrency}), each level holding one: the innermost call could never "
                          f"run. Raise {name!r}'s concurrency or recurse less deep", name)


class Deadlines:
    """``watch(key, when, expire)``: ``expire(key)`` runs at loop time ``when`` unless
    ``forget(key)`` came first. One timer for all keys."""

    __slots__ = ("_due", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Hashable, tuple[float, Expire]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, key: Hashable, when: float, expire: Expire) -> None:
        self._due[key] = (when, expire)
        timer = self._timer
        if timer is None or when < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._fire)

    def forget(self, key: Hashable) -> None:
        self._due.pop(key, None)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        for key in [key for key, (when, _) in self._due.items() if when <= now]:
            _, expire = self._due.pop(key)
            expire(key)
        if self._due:
            self._timer = self._loop.call_at(min(when for when, _ in self._due.values()), self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()


class Caller:
    """The worker whose calls a ``Calls`` sends: its endpoint, function, pool, outbox, counters."""

    __slots__ = ("counters", "function", "id", "outbox", "pool")

    def __init__(self, id: int, function: Function, pool: Pool, outbox: Outbox, counters: memoryview) -> None:
        self.id = id
        self.function = function
        self.pool = pool
        self.outbox = outbox
        self.counters = counters


class Calls:
    """A worker's ``ctx.call``s waiting for their reply, by call id; and the callees that
    crashed and are not back yet (calls to them fail at once instead of timing out): this
    worker's copy of membership's down functions (spright.front.membership), as the first
    gateway tells it with DOWN and READY notices.

    A call leaves the table when its future settles (reply, error, timeout, refusal, crash);
    one whose caller stopped waiting (cancelled) leaves at its deadline. A streamed call
    (``ctx.call_stream``: spright.worker.inflows) has an ``Inflow`` too, which its PART and
    END go to; it leaves when its stream ends or its consumer leaves."""

    def __init__(self, table: RouteTable, deadlines: Deadlines, loop: asyncio.AbstractEventLoop,
                 spans: WorkSpans, caller: Caller) -> None:
        """``spans``: where a traced call's record goes once the call is over."""
        self._caller = caller
        self._function_id = table.function_id(caller.function.name)
        self._table = table
        self._deadlines = deadlines
        self._loop = loop
        self._waiting: dict[int, tuple[asyncio.Future[Reply], int]] = {}  # call id -> (future, callee)
        self._down: set[int] = set()
        self._ids = itertools.count(1)
        self._spans = spans
        self._traced: dict[int, tuple[int, int, int, int]] = {}  # call id -> (sent at, request id, chain, depth)
        self.streams: dict[int, Inflow] = {}  # call id -> the parts of a streamed call

    def send(self, ctx: Context, function: str, value: Any) -> asyncio.Future[Reply]:
        """``ctx.call``: ``value`` in a new slot to ``function``, sent now; the future settles
        with its reply (or fails: an unknown function, a self-call too deep, a callee down...)."""
        return self._issue(ctx, function, value, 0)[1]

    def stream(self, ctx: Context, function: str, value: Any) -> CallStream:
        """``ctx.call_stream``: as ``send``, the callee asked for its answer in parts."""
        call_id, outcome = self._issue(ctx, function, value, IN_PARTS)
        caller = self._caller
        d = descriptor_of(ctx)
        callee = self._table.function_id(function) if call_id else 0
        inflow = Inflow(ctx, d.request_id, call_id, callee, function, outcome, caller.id, caller.pool, caller.outbox,
                        self.close)
        if call_id and not outcome.done():
            self.streams[call_id] = inflow
        return CallStream(inflow)

    def _issue(self, ctx: Context, function: str, value: Any, status: int) -> tuple[int, asyncio.Future[Reply]]:
        """The call sent, its id and future; id 0: it failed at once (the future says why)."""
        caller = self._caller
        try:
            callee = self._table.function_id(function)
        except LookupError as exc:
            return 0, self._failed(CallError(404, str(exc), function))
        d = descriptor_of(ctx)
        depth = 0
        if callee == self._function_id:
            depth = depth_of(d) + 1
            if depth >= caller.function.concurrency:
                return 0, self._failed(too_deep(caller.function.name, caller.function.concurrency, depth))
        depth = min(depth, MAX_DEPTH)
        traced = d.flags & TRACED
        try:
            payload, body_flag = encode(value)
            call_id, future = self.open(callee, self._table.timeouts[d.chain],
                                        (perf_counter_ns(), d.request_id, d.chain, depth) if traced else None)
        except Exception as exc:  # CallError (callee down), TypeError (payload orjson cannot encode)
            return 0, self._failed(exc)
        try:
            slot = caller.pool.put(payload, raw_meta(ctx), d.request_id)
        except Exception as exc:  # PoolExhausted
            self.close(call_id, 503)
            future.set_exception(exc)
            return 0, future
        caller.outbox.put(descriptor.call(callee, caller.id, body_flag | traced, d.chain, slot.id, slot.generation,
                                          len(payload), d.request_id, call_id, depth, status))
        counters = caller.counters
        counters[OUT] += 1
        counters[CALLS] += 1
        return call_id, future

    def _failed(self, error: Exception) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = self._loop.create_future()
        future.set_exception(error)
        return future

    def open(self, callee: int, timeout: float,
             trace: tuple[int, int, int, int] | None = None) -> tuple[int, asyncio.Future[Reply]]:
        """A new call id and the future its reply settles; CallError 503 while ``callee`` is
        down. ``trace``: the call is traced (sent at, request id, chain, depth)."""
        if callee in self._down:
            name = self._table.name_of(callee)
            raise CallError(503, f"function {name!r} is restarting after a crash", name)
        call_id = next(self._ids) & 0xFFFFFFFF
        future = self._loop.create_future()
        self._waiting[call_id] = (future, callee)
        if trace is not None:
            self._traced[call_id] = trace
        self._deadlines.watch(call_id, self._loop.time() + timeout, self._timed_out)
        return call_id, future

    def close(self, call_id: int, status: int) -> None:
        """Call ``call_id`` is over with ``status`` (its trace record says so): forget it."""
        entry = self._waiting.pop(call_id, None)
        self._deadlines.forget(call_id)
        if self.streams:
            self.streams.pop(call_id, None)
        if self._traced and (trace := self._traced.pop(call_id, None)) is not None:
            self._spans.called(trace, entry[1] if entry else 0, call_id, status)

    def _timed_out(self, call_id: Hashable) -> None:
        future, callee = self._waiting.get(cast(int, call_id), (None, 0))
        if self.streams and (inflow := self.streams.get(cast(int, call_id))) is not None:
            inflow.stop_producer()  # no part for a whole timeout: the callee stops too
        self.close(cast(int, call_id), 504)
        if future is not None and not future.done():
            name = self._table.name_of(callee)
            future.set_exception(CallError(504, f"call to {name!r} timed out", name))

    def settle(self, d: Descriptor, body: bytes | None) -> None:
        """A REPLY or ERROR for call ``d.call_id``; ``body`` None: its slot was stale."""
        future = self._waiting.get(d.call_id, (None, 0))[0]
        if body is None or future is None:  # late: the call or its slot is gone
            return
        self.close(d.call_id, d.status or (500 if d.flags & KIND_MASK == ERROR else 200))
        if future.done():  # the caller stopped waiting (cancelled)
            return
        if d.flags & KIND_MASK == ERROR:
            error = orjson.loads(body) if body else {}
            origin = error.get("function") or self._table.name_of(d.sender)
            future.set_exception(CallError(d.status or 500, error.get("error", ""), origin, error.get("error_id")))
        else:
            future.set_result(Reply(body, d.flags & BODY_MASK == BODY_JSON))

    def part(self, d: Descriptor) -> None:
        """A PART or END of a streamed call; one of no open call (its consumer left, it
        timed out) is freed, and a PART's sender told to stop."""
        inflow = self.streams.get(d.call_id) if self.streams else None
        if inflow is None or inflow.request_id != d.request_id:
            caller = self._caller
            caller.pool.free(d.slot, d.generation)
            if d.flags & KIND_MASK == PART:
                caller.outbox.put(descriptor.cancel(d.sender, caller.id, d.request_id, d.call_id))
            return
        self._deadlines.watch(d.call_id, self._loop.time() + self._table.timeouts[d.chain], self._timed_out)
        if d.flags & KIND_MASK == PART:
            inflow.put(d)
        else:
            inflow.finish(d)

    def abandon(self, ctx: Context) -> None:
        """``ctx``'s handler ended: the streams it still had open are closed (their callees stop)."""
        for inflow in [inflow for inflow in self.streams.values() if inflow.owner is ctx]:
            inflow.close()

    def refused(self, d: Descriptor, caller: int) -> None:
        """The data plane bounced call ``d.call_id``: its callee is in another security domain."""
        future, callee = self._waiting.get(d.call_id, (None, 0))
        if future is None:
            return
        self.close(d.call_id, 403)
        if future.done():
            return
        name, table = self._table.name_of(callee), self._table
        future.set_exception(CallError(
            403, f"function {table.name_of(caller)!r} (security domain {table.domain_of(caller)!r}) may not call "
                 f"{name!r} (domain {table.domain_of(callee)!r}): calls cannot cross security domains", name))

    def callee_died(self, callee: int) -> None:
        """Calls waiting on a worker that died fail now (502), not at their timeout; new
        calls to it fail with 503 until the gateway says it is back."""
        self._down.add(callee)
        name = self._table.name_of(callee)
        for call_id, (future, target) in list(self._waiting.items()):
            if target == callee:
                self.close(call_id, 502)
                if not future.done():
                    future.set_exception(CallError(502, f"function {name!r} crashed", name))

    def callee_back(self, callee: int) -> None:
        self._down.discard(callee)
