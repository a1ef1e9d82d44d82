"""Streamed answers: a handler that is an async generator answers in parts, each sent as it
is yielded, in a slot of its own, as a PART descriptor to whoever reads the stream (the
gateway, which writes it to the client as an HTTP chunk at once).

Flow control is by credit, as HTTP/2's windows: at most a few parts of one stream are
in flight (sent, not yet taken by their reader: ``STREAM_WINDOW``); the generator is not resumed until the reader
takes one. A reader that stops reading (a slow client, whose socket is full) therefore stops
the handler at its ``yield``, instead of filling the pool. The reader sends CREDIT as it takes
parts, and CANCEL when it goes away: the handler's Task is cancelled where it is (inside the
generator it sees ``CancelledError``; waiting for credit at a ``yield``, the same is thrown in
there). Parts carry their number (mod 256, the ``hop`` byte): data planes that move
descriptors over several connections (http, grpc) may reorder them, and the reader puts them
back in order. ``STREAM_WINDOW`` below 256 keeps those numbers unambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import AsyncGeneratorType
from typing import Any

from spright.data import descriptor
from spright.data.descriptor import GATEWAY, HAS_RESPONSE_META, STREAM_WINDOW, TRACED, Descriptor
from spright.host.counters import OUT
from spright.worker.answers import head_meta
from spright.worker.calls import Caller
from spright.worker.context import Context, encode
from spright.worker.failures import too_large

READER_GONE = "spright: the stream's reader went away"  # the cancel message a handler's Task gets

Parts = AsyncGeneratorType[Any, None]


class _Flow:
    """One stream being sent: parts sent, parts its reader took, the Task producing it."""

    __slots__ = ("sent", "taken", "task", "waiter")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.sent = 0
        self.taken = 0
        self.task = task
        self.waiter: asyncio.Future[None] | None = None


class Streams:
    """A worker's streams in flight, by (request id, call id, reader): the reader of a
    call's (its caller's endpoint) is in the key, as call ids are each caller's own."""

    __slots__ = ("_caller", "_loop", "_max_part", "_open")

    def __init__(self, caller: Caller, loop: asyncio.AbstractEventLoop, max_part: int | None) -> None:
        """``max_part``: the largest part (``Config.max_response``; None: what a slot holds)."""
        self._caller = caller
        self._loop = loop
        self._max_part = max_part
        self._open: dict[tuple[int, int, int], _Flow] = {}

    async def send(self, d: Descriptor, ctx: Context, parts: Parts, to: int,
                   alive: Callable[[Descriptor], None]) -> int:
        """Every part ``parts`` yields, to endpoint ``to`` (the gateway: the request's owner),
        as it comes; returns how many were sent. ``alive`` runs after each part: the route's
        timeout counts between parts, not over the whole stream."""
        key = (d.request_id, d.call_id, to if d.call_id else GATEWAY)
        flow = self._open[key] = _Flow(asyncio.current_task())
        try:
            await self._pump(d, ctx, parts, to, alive, flow)
        except BaseException as exc:  # no await inside an except or finally block: mypyc's
            # compiled coroutines then re-raise a stale exception in a later call (seen with 1.x)
            failed: BaseException | None = exc
        else:
            failed = None
        del self._open[key]
        if failed is None:
            return flow.sent
        if isinstance(failed, asyncio.CancelledError) and parts.ag_frame is not None and not parts.ag_running:
            # stopped at a yield (waiting for credit): the handler sees its cancellation there
            with contextlib.suppress(BaseException):
                await parts.athrow(asyncio.CancelledError(*failed.args))
        await parts.aclose()
        raise failed

    async def _pump(self, d: Descriptor, ctx: Context, parts: Parts, to: int, alive: Callable[[Descriptor], None],
                    flow: _Flow) -> None:
        caller = self._caller
        flags = d.flags & (HAS_RESPONSE_META | TRACED)
        status = 0
        async for value in parts:
            payload, body_flag = encode(value)
            if not payload:
                continue  # an empty part would read as the end of a chunked body: nothing to send
            if self._max_part is not None and len(payload) > self._max_part:
                raise too_large(caller.function.name, len(payload), self._max_part)
            meta: bytes | None = None
            if not flow.sent:  # the first part carries the response's head: status, type, headers
                status = ctx.status or d.status
                meta, flags = head_meta(ctx, flags | body_flag)
            slot = caller.pool.put(payload, meta or b"", d.request_id)
            caller.outbox.put(descriptor.part(to, caller.id, flags, flow.sent, d.chain, status if not flow.sent
                                              else 0, slot.id, slot.generation, len(payload), d.request_id,
                                              d.call_id))
            caller.counters[OUT] += 1
            flow.sent += 1
            caller.outbox.flush()  # the reader is waiting for this part: not for the loop's turn
            alive(d)
            while flow.sent - flow.taken >= STREAM_WINDOW:
                flow.waiter = self._loop.create_future()
                await flow.waiter

    def credit(self, d: Descriptor) -> None:
        """The reader took parts: the producer may send as many more."""
        flow = self._open.get((d.request_id, d.call_id, d.sender if d.call_id else GATEWAY))
        if flow is None:
            return  # the stream ended meanwhile
        flow.taken += (d.status - flow.taken) & 0xFFFF
        waiter = flow.waiter
        if waiter is not None and not waiter.done() and flow.sent - flow.taken < STREAM_WINDOW:
            waiter.set_result(None)

    def cancel(self, d: Descriptor) -> None:
        """The reader went away: the producing handler is cancelled."""
        flow = self._open.get((d.request_id, d.call_id, d.sender if d.call_id else GATEWAY))
        if flow is not None and flow.task is not None:
            flow.task.cancel(READER_GONE)


async def joined(parts: Parts) -> bytes | str:
    """A streaming handler whose answer goes to no reader of parts (a hop mid-chain, a
    ``ctx.call`` not ``ctx.call_stream``): its parts as one payload, as the wire would carry them; text when every
    part was text."""
    pieces: list[bytes] = []
    texts = True
    async for value in parts:
        texts = texts and isinstance(value, str)
        pieces.append(bytes(encode(value)[0]))
    body = b"".join(pieces)
    return body.decode() if texts and pieces else body

