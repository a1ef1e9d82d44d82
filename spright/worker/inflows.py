"""A streamed answer at its caller: ``async for part in ctx.call_stream("fn", payload)``.

The call goes out as any ``ctx.call`` does, marked ``IN_PARTS``; a callee whose handler is an
async generator then sends each part as it yields it (PART, to the caller's endpoint, then
END: spright.worker.streams, the protocol the gateway's streams use). A callee that returns
one value answers with one REPLY, which the caller reads as a stream of one part.

Here the parts are put back in order (spright.data.reorder), each handed to the consumer as a
``Reply`` (its slot back to the pool as it is taken), and taken parts credited to the producer:
parts the consumer has not taken are not credited, so a consumer that stops iterating stops
the callee at its ``yield`` after ``STREAM_WINDOW`` parts. The call's timeout runs between
parts. A failure of the callee midway (ERROR), its crash, the timeout: the consumer gets the
parts that were in order before it, then ``CallError``. A consumer that leaves the loop early
(``break``, an exception: the iterator is dropped, or closed with ``aclose()`` / ``async
with``), or whose handler ends or is cancelled, sends CANCEL: the callee's handler is
cancelled at its ``yield`` (it sees ``CancelledError``), and whatever it still sends is freed
on arrival.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from spright.data import descriptor
from spright.data.descriptor import BODY_JSON, BODY_MASK, CREDIT_EVERY, Descriptor
from spright.data.reorder import Reorder
from spright.host.pool import Pool
from spright.transport.base import Outbox
from spright.worker.context import CallError, Context, Reply


class Inflow:
    """One streamed call's parts at its caller (held by ``Calls`` while the call is open)."""

    __slots__ = ("_credited", "_endpoint", "_failure", "_forget", "_loop", "_order", "_outbox", "_pool", "_ready",
                 "_reply", "_taken", "_waiter", "call_id", "callee", "name", "over", "owner", "producer",
                 "request_id")

    def __init__(self, owner: Context, request_id: int, call_id: int, callee: int, name: str,
                 outcome: asyncio.Future[Reply], endpoint: int, pool: Pool, outbox: Outbox,
                 forget: Callable[[int, int], None]) -> None:
        """``owner``: the handler's ctx that called; ``outcome``: the call's future in ``Calls``
        (it settles with a REPLY, an ERROR, a timeout, the callee's crash or refusal);
        ``forget(call_id, status)``: the call is over for ``Calls``."""
        self.owner = owner
        self.request_id = request_id
        self.call_id = call_id
        self.callee = callee  # the function id: CANCEL goes there until a part names its instance
        self.name = name
        self.producer = -1  # the endpoint sending the parts (the first part's sender)
        self.over = False  # ended, failed or cancelled: Calls forgot it
        self._endpoint = endpoint
        self._pool = pool
        self._outbox = outbox
        self._forget = forget
        self._loop = outcome.get_loop()
        self._order = Reorder()
        self._ready: deque[Descriptor] = deque()  # in order, not taken yet (their slots held)
        self._reply: Reply | None = None  # a callee that answered in one REPLY
        self._failure: BaseException | None = None
        self._taken = 0
        self._credited = 0
        self._waiter: asyncio.Future[None] | None = None
        outcome.add_done_callback(self._settled)

    # -- from the producer (Calls routes PART and END here) ------------------------------------
    def put(self, d: Descriptor) -> None:
        self.producer = d.sender
        order = self._order
        part = order.put(d)
        while part is not None:
            self._ready.append(part)
            part = order.next()
        self._ended()

    def finish(self, d: Descriptor) -> None:
        """END: the stream is over once every part before it is in."""
        self.producer = d.sender
        self._order.finish(d)
        self._ended()

    def _ended(self) -> None:
        order = self._order
        if order.complete and not self.over:  # every part is here: the call is over (END's slot, the call's, free)
            end = order.left()[0]
            self.over = True
            self._pool.free(end.slot, end.generation)
            self._forget(self.call_id, 200)
        self._woken()

    def _settled(self, outcome: asyncio.Future[Reply]) -> None:
        """REPLY (one part), ERROR, timeout, crash or refusal: Calls forgot the call already."""
        if outcome.cancelled() or self.over:
            return
        self.over = True
        self._drop_early()
        failure = outcome.exception()
        if failure is not None:
            self._failure = failure
        else:
            self._reply = outcome.result()
        self._woken()

    def _woken(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- to the consumer ------------------------------------------------------------------------
    async def next(self) -> Reply:
        while True:
            ready = self._ready
            if ready:
                d = ready.popleft()
                body = self._pool.take(d.slot, d.generation, d.length)
                self._taken += 1
                if not self.over and self._taken - self._credited >= CREDIT_EVERY:
                    self._credit()
                if body is None:  # never expected: a part naming a slot that is not its own
                    self._stop()
                    raise CallError(502, f"a part of the stream from {self.name!r} was lost", self.name)
                return Reply(body, d.flags & BODY_MASK == BODY_JSON)
            if self._reply is not None:
                reply, self._reply = self._reply, None
                return reply
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self.over:
                raise StopAsyncIteration
            if self._taken > self._credited:  # nothing to take: whatever was taken is credited
                self._credit()
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _credit(self) -> None:
        self._credited = self._taken
        if self.producer >= 0:
            self._outbox.put(descriptor.credit(self.producer, self._endpoint, self.request_id, self.call_id,
                                               self._taken))

    # -- leaving early --------------------------------------------------------------------------
    def close(self) -> None:
        """The consumer is gone (left the loop, its handler ended): the callee is told to stop,
        the parts here are freed."""
        if not self.over:
            self.over = True
            self._forget(self.call_id, 499)
            self.stop_producer()
        self._stop()

    def stop_producer(self) -> None:
        """CANCEL to the callee: its instance once a part named it, else the function's own endpoint."""
        self._outbox.put(descriptor.cancel(self.producer if self.producer >= 0 else self.callee, self._endpoint,
                                           self.request_id, self.call_id))

    def _stop(self) -> None:
        self.over = True
        self._drop_early()
        free = self._pool.free
        for d in self._ready:
            free(d.slot, d.generation)
        self._ready.clear()
        self._reply = None
        self._woken()

    def _drop_early(self) -> None:
        free = self._pool.free
        for d in self._order.left():
            free(d.slot, d.generation)


class CallStream:
    """What ``ctx.call_stream`` returns: an async iterator of the callee's parts, each a
    ``Reply`` (as ``await ctx.call`` returns). Leaving the loop early (or ``aclose()``, or the
    end of ``async with``) stops the callee."""

    __slots__ = ("_inflow",)

    def __init__(self, inflow: Inflow) -> None:
        self._inflow = inflow

    def __aiter__(self) -> CallStream:
        return self

    async def __anext__(self) -> Reply:
        return await self._inflow.next()

    async def aclose(self) -> None:
        self._inflow.close()

    async def __aenter__(self) -> CallStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._inflow.close()

    def __del__(self) -> None:  # dropped by a loop left early: the callee stops now, not when the handler ends
        self._inflow.close()
