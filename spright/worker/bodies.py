"""A request body read as it arrives: the worker's end of spright.front.uploads (which has the
protocol). A function registered with ``stream_body=True`` gets its requests at their head;
``ctx.stream()`` yields the bytes that came with it, then each PART the gateway sends, put back
in order (spright.data.reorder), until END.

The handler's instance names itself to the gateway with a first CREDIT (``taken`` 0) when the
handler starts, and gives credit back as it takes parts (every ``CREDIT_EVERY``, and all it
has whenever it waits for more): the gateway sends at most ``STREAM_WINDOW`` parts ahead of
the handler. Each part is copied out of its slot as the handler takes it, and the slot freed.
A handler that returns (or fails) before the body's end sends CANCEL: the gateway drops the
rest; the parts already here are freed, and those still coming on arrival. CANCEL from the
gateway (the client went away) cancels the handler, as a streamed answer's reader leaving does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from spright.data import descriptor
from spright.data.descriptor import CREDIT_EVERY, GATEWAY_SHIFT, KIND_MASK, PART, Descriptor
from spright.data.reorder import Reorder
from spright.host.pool import Pool
from spright.transport.base import Outbox
from spright.worker.context import Context, stream_body
from spright.worker.streams import READER_GONE


class BodyFlow:
    """One request's body, as ``ctx.stream()`` reads it (a streamed call's parts at its
    caller are spright.worker.inflows'; these go the other way, from the gateway)."""

    __slots__ = ("_bodies", "credited", "d", "done", "first", "gateway", "order", "read", "ready", "taken", "task",
                 "waiter")

    def __init__(self, bodies: Bodies, d: Descriptor, first: bytes, gateway: int) -> None:
        self._bodies = bodies
        self.d = d
        self.first = first  # the bytes that came with the request
        self.gateway = gateway  # the endpoint of the gateway process that sends the parts
        self.order = Reorder()  # END in it once it came
        self.ready: deque[Descriptor] = deque()  # in order, not taken yet
        self.taken = 0
        self.credited = 0
        self.done = False  # the whole body was read
        self.read = False  # ctx.stream() was called
        self.task = asyncio.current_task()  # the handler's: cancelled when the client goes away
        self.waiter: asyncio.Future[None] | None = None

    def chunks(self) -> AsyncIterator[bytes]:
        if self.read:
            raise RuntimeError("ctx.stream() was read already: a body streams once")
        self.read = True
        return Chunks(self._bodies, self)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Chunks:
    """What ``ctx.stream()`` returns for a streamed body (an iterator class: mypyc compiles no
    async generator)."""

    __slots__ = ("_bodies", "_flow")

    def __init__(self, bodies: Bodies, flow: BodyFlow) -> None:
        self._bodies = bodies
        self._flow = flow

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        return await self._bodies.next_chunk(self._flow)


class Bodies:
    """A worker's streamed bodies being read, by request id."""

    __slots__ = ("_alive", "_gateways", "_id", "_loop", "_open", "_outbox", "_pool")

    def __init__(self, id: int, pool: Pool, outbox: Outbox, gateways: tuple[int, ...],
                 loop: asyncio.AbstractEventLoop, alive: Callable[[Descriptor], None]) -> None:
        """``gateways``: the gateway processes' endpoints (a request id names its own);
        ``alive``: the handler took a part, its chain's timeout starts again."""
        self._id = id
        self._pool = pool
        self._outbox = outbox
        self._gateways = gateways
        self._loop = loop
        self._alive = alive
        self._open: dict[int, BodyFlow] = {}

    def open(self, ctx: Context, d: Descriptor) -> BodyFlow:
        """The handler of request ``d`` starts: its body is read from ``ctx.stream()``."""
        gateway = self._gateways[d.request_id >> GATEWAY_SHIFT]
        flow = self._open[d.request_id] = BodyFlow(self, d, self._pool.read(d.slot, d.length), gateway)
        stream_body(ctx, flow)
        self._outbox.put(descriptor.credit(gateway, self._id, d.request_id, 0, 0))  # here it is read
        return flow

    def close(self, flow: BodyFlow) -> None:
        """The handler is over: a body not read to its end is dropped (CANCEL to its gateway)."""
        if self._open.get(flow.d.request_id) is flow:
            del self._open[flow.d.request_id]
        if not flow.done:
            self._outbox.put(descriptor.cancel(flow.gateway, self._id, flow.d.request_id, 0))
        free = self._pool.free
        for d in (*flow.ready, *flow.order.left()):
            if d.flags & KIND_MASK == PART:  # (END has no slot)
                free(d.slot, d.generation)
        flow.ready.clear()
        flow.done = True
        flow.wake()

    # -- from the gateway ----------------------------------------------------------------------
    def part(self, d: Descriptor) -> None:
        flow = self._open.get(d.request_id)
        if flow is None or d.sender != flow.gateway:
            if d.sender in self._gateways:  # a part sent before the gateway knew the handler was over
                self._pool.free(d.slot, d.generation)
            return
        order, ready = flow.order, flow.ready
        part = order.put(d)
        while part is not None:
            ready.append(part)
            part = order.next()
        flow.wake()

    def end(self, d: Descriptor) -> None:
        flow = self._open.get(d.request_id)
        if flow is not None and d.sender == flow.gateway:
            flow.order.finish(d)
            flow.wake()

    def cancel(self, d: Descriptor) -> None:
        """The client went away: the handler reading its body is cancelled."""
        flow = self._open.get(d.request_id)
        if flow is not None and d.sender == flow.gateway and flow.task is not None:
            flow.task.cancel(READER_GONE)

    # -- ctx.stream() --------------------------------------------------------------------------
    async def next_chunk(self, flow: BodyFlow) -> bytes:
        """The next chunk of ``flow``'s body; raises StopAsyncIteration at its end."""
        if flow.first:
            first, flow.first = flow.first, b""
            return first
        while True:
            if flow.ready:
                d = flow.ready.popleft()
                chunk = self._pool.take(d.slot, d.generation, d.length)
                flow.taken += 1
                if flow.taken - flow.credited >= CREDIT_EVERY:
                    self._credit(flow)
                if chunk is None:  # never expected: a part naming a slot that is not its own
                    raise RuntimeError(f"part {flow.taken} of the request body names a stale slot: {d}")
                self._alive(flow.d)
                return chunk
            if flow.done or flow.order.complete:
                flow.done = True
                raise StopAsyncIteration
            if flow.taken > flow.credited:  # waiting: all the credit it has goes back now
                self._credit(flow)
            flow.waiter = self._loop.create_future()
            await flow.waiter

    def _credit(self, flow: BodyFlow) -> None:
        flow.credited = flow.taken
        self._outbox.put(descriptor.credit(flow.gateway, self._id, flow.d.request_id, 0, flow.taken))
        self._outbox.flush()  # the gateway is holding the client back for it
