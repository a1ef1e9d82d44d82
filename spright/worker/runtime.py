"""A function worker: one uvloop loop, one data-plane endpoint, many concurrent handlers.

The worker sleeps in the loop until its endpoint has descriptors (event-driven, no
polling), builds ``ctx`` over the slot, runs the handler and sends one descriptor onward:
to the chain's next hop, back to a caller, or to the gateway.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections import deque
from collections.abc import Hashable
from time import perf_counter_ns
from typing import Any, cast

from spright.data import descriptor
from spright.data.descriptor import (
    CALL,
    CANCEL,
    CREDIT,
    DOWN,
    END,
    ERROR,
    GATEWAY,
    IN_PARTS,
    KIND_MASK,
    PART,
    READY,
    REFUSED,
    REPLY,
    REQUEST,
    RESPONSE,
    SIZE,
    TRACED,
    Descriptor,
    unpack_many,
)
from spright.data.function import Function
from spright.data.table import RouteTable
from spright.host.counters import (
    BYTES,
    DROPPED,
    HANDLED,
    HANDLER_NS,
    IN,
    IN_FLIGHT,
    OUT,
    REFUSED_CALLS,
    ROW_WORDS,
)
from spright.host.pool import Pool
from spright.host.spans import SpanWriter
from spright.transport.base import Endpoint, Outbox, Transport
from spright.worker.answers import Answers
from spright.worker.bodies import Bodies
from spright.worker.calls import Caller, Calls, Deadlines
from spright.worker.context import (
    Context,
    HTTPError,
    Reply,
    end,
)
from spright.worker.fence import Quarantine
from spright.worker.inflows import CallStream
from spright.worker.streams import READER_GONE, Streams, joined
from spright.worker.tasks import PAST_DEADLINE, cancel_message, never_suspends, start_task
from spright.worker.tracing import WorkSpans

log = logging.getLogger("spright.worker")


class Worker:
    """Dispatches the descriptors of one function's endpoint: runs up to ``concurrency``
    handlers at a time (the rest wait in a backlog), sends each result onward, settles the
    replies of its own ``ctx.call``s."""

    def __init__(self, table: RouteTable, function: Function, pool: Pool, counters: memoryview | None = None,
                 endpoint: int | None = None, spans: SpanWriter | None = None) -> None:
        """``counters``: this worker's row of the node's counter table (see spright.host.counters);
        ``endpoint``: the instance's endpoint id (default: the function's own, its first);
        ``spans``: its ring of span records, when the node traces (spright.host.spans)."""
        self.table = table
        self.function = function
        self._function_id = table.function_id(function.name)
        self.id = self._function_id if endpoint is None else endpoint
        self.pool = pool
        self._max_response = pool.config.max_response  # None: what the largest slot holds
        self.counters = counters if counters is not None else memoryview(bytearray(8 * ROW_WORDS)).cast("Q")
        self._spans = WorkSpans(spans, self.id)
        self._is_async = inspect.iscoroutinefunction(function.handler)
        self._runs_inline = never_suspends(function.handler)
        self._yields = inspect.isasyncgenfunction(function.handler)  # answers in parts (spright.worker.streams)
        self._reads_stream = function.stream_body  # its requests' bodies come after them (spright.worker.bodies)
        self._active = 0
        # waiting for a place: since (loop time), received (perf_counter_ns, traced requests only)
        self._backlog: deque[tuple[Descriptor, float, int]] = deque()
        self._drained: asyncio.Future[None] | None = None  # set while drain() waits
        self._running: dict[asyncio.Task[None], Descriptor] = {}  # handlers run as Tasks, watched for their deadline
        self._timeouts = table.timeouts
        self._endpoint: Endpoint | None = None
        # set by start(): the worker runs only once it is attached
        self._loop: asyncio.AbstractEventLoop
        self._steps: tuple[tuple[tuple[int, int], ...], ...]
        self._deadlines: Deadlines
        self._calls: Calls
        self._outbox: Outbox
        self._quarantine: Quarantine
        self._streams: Streams
        self._answers: Answers
        self._bodies: Bodies

    async def start(self, transport: Transport, *, announce: bool = True) -> None:
        """Attach to the data plane; ``announce``: say READY to the gateway now (else ``announce()``)."""
        self._loop = loop = asyncio.get_running_loop()
        self._steps = self.table.steps(transport.addresses())
        self._deadlines = Deadlines(loop)
        self._quarantine = Quarantine(self.pool, self.id, loop, self.function.name)
        transport.carry(self.pool)
        self._endpoint = await transport.attach(self.id, self.receive)
        self._outbox = Outbox(self._endpoint, loop)
        caller = Caller(self.id, self.function, self.pool, self._outbox, self.counters)
        self._calls = Calls(self.table, self._deadlines, loop, self._spans, caller)
        self._streams = Streams(caller, loop, self._max_response)
        self._bodies = Bodies(self.id, self.pool, self._outbox, self.table.gateways, loop, self._alive)
        self._answers = Answers(self.id, self.function.name, self.pool, self._steps, self._spans, self.counters,
                                self._max_response)
        if announce:
            self.announce()

    def announce(self) -> None:
        """READY to the gateway: requests may come."""
        self._outbox.put(descriptor.notice(GATEWAY, self.id, READY))

    async def drain(self) -> None:
        """Wait until every accepted request has finished."""
        if self._active:
            if self._drained is None or self._drained.done():
                self._drained = self._loop.create_future()
            await self._drained

    def close(self) -> None:
        """Stop. Handlers still running (the drain timed out) are cancelled: ``closed()`` waits
        for them, so that none ends after the node's memory is gone."""
        self._backlog.clear()  # never started now
        for task in self._running:
            task.cancel()
        if self._endpoint is not None:
            self._deadlines.close()
            self._quarantine.close()
            self._endpoint.close()

    async def closed(self) -> None:
        """After ``close()``: the handlers have ended and the data plane has released this
        worker's endpoint. A handler that ignores its cancellation for a second is left
        running, but detached: nothing of it writes the counters after this."""
        if self._running:
            await asyncio.wait(list(self._running), timeout=1.0)
            for task in self._running:
                task.remove_done_callback(self._task_done)
            self._running.clear()
        if self._endpoint is not None:
            await self._endpoint.closed()

    # -- receiving -------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        counters = self.counters
        payload_bytes = 0
        with self._outbox.batch():
            for d in unpack_many(data):
                payload_bytes += d.length
                kind = d.flags & KIND_MASK
                if kind in (REQUEST, CALL):
                    if d.chain >= len(self._steps) or (kind == REQUEST and d.hop + 1 >= len(self._steps[d.chain])):
                        self._dropped(d, "its chain or hop names no step of the route table")
                    elif self._active < self.function.concurrency:
                        self._begin(d, None, perf_counter_ns() if d.flags & TRACED else 0)
                    else:
                        self._backlog.append((d, self._loop.time(), perf_counter_ns() if d.flags & TRACED else 0))
                elif kind in (REPLY, ERROR):
                    self._calls.settle(d, self.pool.take(d.slot, d.generation, d.length))
                elif kind in (PART, END) and d.call_id:  # of a stream this worker called for (ctx.call_stream)
                    self._calls.part(d)
                elif kind == PART:  # call id 0: of a request body read as it arrives (spright.worker.bodies)
                    self._bodies.part(d)
                elif kind == END:
                    self._bodies.end(d)
                elif kind == CREDIT:
                    self._streams.credit(d)
                elif kind == CANCEL:
                    self._streams.cancel(d)
                    if not d.call_id:  # the client went away: a handler reading its body stops too
                        self._bodies.cancel(d)
                elif kind == REFUSED:
                    self._refused(d)
                elif kind in (DOWN, READY) and not 0 < d.call_id <= len(self.table.functions):
                    self._dropped(d, "it names no function")
                elif kind == DOWN:
                    self._calls.callee_died(d.call_id)
                elif kind == READY:
                    self._calls.callee_back(d.call_id)
                else:
                    self._dropped(d, "its kind is not one a worker receives")
            counters[BYTES] += payload_bytes
            counters[IN_FLIGHT] = self._active + len(self._backlog)  # what the autoscaler reads
            # after IN_FLIGHT: a sender that sees IN move (spright.host.instances) reads the
            # in-flight figure that counts this batch, never the one before it
            counters[IN] += len(data) // SIZE
            if not self._active and self._drained is not None:
                self._now_idle()

    def _dropped(self, d: Descriptor, why: str) -> None:
        """A descriptor no correct peer sends (a buggy or hostile function's): logged, counted
        (``dropped_descriptors``), and dropped without touching any slot."""
        self.counters[DROPPED] += 1
        log.warning("%s: dropped a descriptor: %s: %s", self.function.name, why, d)

    def _refused(self, d: Descriptor) -> None:
        """The data plane bounced a descriptor of ours: its receiver is in another domain."""
        self.counters[REFUSED_CALLS] += 1
        if d.call_id:  # a CALL (the kind now says REFUSED; only calls carry a call id)
            self.pool.free(d.slot, d.generation)
            self._calls.refused(d, self.id)
        else:  # chains never cross domains (App.compile checks): the request times out
            log.error("%s: the data plane refused a descriptor across security domains: %s", self.function.name, d)

    def _begin(self, descriptor: Descriptor, arrived: float | None = None, received: int = 0) -> None:
        """Run the handler; ``arrived``: when a descriptor that waited for a place came in
        (loop time); ``received``: when, for the trace (0: untraced)."""
        self._active += 1
        if self._runs_inline:  # what an eager Task would do, minus the Task; in a context of its own
            try:
                contextvars.copy_context().run(self._run(descriptor, received).send, None)
            except StopIteration:
                pass
            finally:
                self._finished()
            return
        task = start_task(self._loop, self._run(descriptor, received))
        if task.done():  # an eager start ran it to the end: no callback, no loop trip
            self._finished()
            return
        # a hung handler must not hold a place, nor its slot, for good: cancelled at its
        # chain's timeout after the request reached this worker
        since = self._loop.time() if arrived is None else arrived
        self._running[task] = descriptor
        self._deadlines.watch(task, since + self._timeouts[descriptor.chain], self._expire)
        # the place comes back in a callback, not in _run's finally: a Task cancelled before
        # its first step (uvloop runs a due timer before it) never enters its coroutine
        task.add_done_callback(self._task_done)

    def _expire(self, task: Hashable) -> None:
        cast("asyncio.Task[None]", task).cancel(PAST_DEADLINE)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        d = self._running.pop(task)
        self._deadlines.forget(task)
        if task.cancelled() and cancel_message(task) == (PAST_DEADLINE,):
            # _run turns this cancellation into a 504 once it runs: this one never ran
            self._shed(d, self._timeouts[d.chain])
        self._finished()

    def _finished(self) -> None:
        self._active -= 1
        self.counters[IN_FLIGHT] = self._active + len(self._backlog)
        while self._backlog:
            descriptor, arrived, received = self._backlog.popleft()
            timeout = self._timeouts[descriptor.chain]
            if self._loop.time() - arrived < timeout:
                self._begin(descriptor, arrived, received)
                return
            self._shed(descriptor, timeout)
        if not self._active and not self._outbox.batching:
            self._now_idle()
            self._outbox.flush()  # nothing else running: waiting for the loop's turn only adds latency

    def _shed(self, d: Descriptor, timeout: float) -> None:
        """A request that waited past its chain's timeout for a place (or was cancelled at
        it before its handler's first step): the gateway (or the caller) has given up on it,
        so it is answered 504 without running its handler."""
        if self.pool.is_current(d.slot, d.generation):
            self._fail(d, HTTPError(504, f"{self.function.name} was busy: the request waited past the chain's "
                                         f"timeout of {timeout:g} s for a place"))

    def _now_idle(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- running a handler -----------------------------------------------------------------
    async def _run(self, d: Descriptor, received: int) -> None:
        """The handler over ``d``, its answer sent on; the caller gives the place back."""
        pool = self.pool
        if not pool.hold(d.slot, d.generation, self.id):
            return  # the request ended (timeout) and its slot was reclaimed: drop
        ctx = Context(self, d, pool.view(d.slot))
        body = self._bodies.open(ctx, d) if self._reads_stream and d.flags & KIND_MASK == REQUEST else None
        started = perf_counter_ns()
        out: bytes | None = None
        slot = d.slot  # where the answer is
        parts = -1  # how many parts a streamed answer had (-1: answered in one)
        try:
            result = self.function.handler(ctx)
            if self._is_async or inspect.isawaitable(result):
                result = await result
            elif self._yields:  # an async generator: its parts go to the gateway (or a caller) as they come, or joined
                if d.flags & KIND_MASK == CALL and d.status == IN_PARTS:
                    parts = await self._streams.send(d, ctx, result, d.sender, self._alive)
                elif d.flags & KIND_MASK == REQUEST and self._steps[d.chain][d.hop + 1][1] == RESPONSE:
                    parts = await self._streams.send(d, ctx, result, GATEWAY, self._alive)
                else:
                    result = await joined(result)
            if not pool.is_current(d.slot, d.generation):
                self._outlived(d)
            elif parts >= 0:
                out = self._answers.streamed(d, ctx, parts, received, started)
            else:
                out, slot = self._answers.forward(d, ctx, result, received, started)
            result = None  # a slice of the body it returned must not look like one kept (end, below)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and exc.args != (PAST_DEADLINE,):
                if exc.args != (READER_GONE,):
                    end(ctx)  # the worker stops: its slots go with it
                    raise
                # nobody reads its stream any more: the request's slot goes back
                out = self._answers.streamed(d, ctx, parts, received, started)
            elif pool.is_current(d.slot, d.generation):
                failed = self._past_deadline(d) if isinstance(exc, asyncio.CancelledError) else exc
                out, slot = self._answers.failure(d, failed, received, started)
            else:
                self._outlived(d)
        if body is not None:
            self._bodies.close(body)  # the rest of a body it did not read is dropped
        # the handler is over, its answer written but not sent: from now on nothing of it
        # touches the slot (spright.worker.fence), and the streams it called for close
        if self._calls.streams:
            self._calls.abandon(ctx)
        if not end(ctx):
            out = self._quarantine.keep(ctx, d, out, slot)
        elif slot != d.slot:  # the answer moved to a larger slot: the request's is free now
            pool.free(d.slot, d.generation)
        if out is not None:
            self._outbox.put(out)
            self.counters[OUT] += 1
        counters = self.counters
        counters[HANDLED] += 1
        counters[HANDLER_NS] += perf_counter_ns() - started
        # over: the figure least-in-flight reads drops before the answer leaves (the place
        # itself comes back in _task_done, which a sender may well not wait for)
        counters[IN_FLIGHT] = self._active - 1 + len(self._backlog)
        if self._active == 1 and not self._outbox.batching:
            self._outbox.flush()  # the only handler running: its answer need not wait for the loop's turn

    def _alive(self, d: Descriptor) -> None:
        """A streaming handler sent a part: its chain's timeout starts again."""
        task = asyncio.current_task()
        if task in self._running:
            self._deadlines.watch(task, self._loop.time() + self._timeouts[d.chain], self._expire)

    def _past_deadline(self, d: Descriptor) -> HTTPError:
        timeout = self._timeouts[d.chain]
        log.warning("%s: request %d still running after its chain's timeout (%g s): cancelled", self.function.name,
                    d.request_id, timeout)
        return HTTPError(504, f"{self.function.name} did not finish within the chain's timeout of {timeout:g} s")

    def _outlived(self, d: Descriptor) -> None:
        """The request ended (timed out) while the handler ran and its slot was freed (a late
        answer of its chain): the slot may hold another request by now, so nothing is written
        to it (and its hold went with the free)."""
        log.warning("%s: request %d ended before its handler returned; result dropped", self.function.name,
                    d.request_id)

    def _fail(self, d: Descriptor, exc: Exception) -> None:
        """``exc``'s answer in the slot of a request no handler ran for, to whoever waits."""
        out, slot = self._answers.failure(d, exc, 0, 0)
        if slot != d.slot:
            self.pool.free(d.slot, d.generation)
        self._outbox.put(out)
        self.counters[OUT] += 1

    # -- internal calls ---------------------------------------------------------------------
    def call(self, ctx: Context, function: str, value: Any) -> asyncio.Future[Reply]:
        """``ctx.call`` (spright.worker.calls: ``Calls.send``)."""
        return self._calls.send(ctx, function, value)

    def call_stream(self, ctx: Context, function: str, value: Any) -> CallStream:
        """``ctx.call_stream`` (spright.worker.inflows)."""
        return self._calls.stream(ctx, function, value)
