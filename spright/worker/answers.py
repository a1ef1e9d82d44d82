"""What a handler's outcome becomes: its result written into the request's slot (or a larger
one) with the descriptor that carries it on, its failure as a JSON error, or the END of the
answer it streamed (spright.worker.streams).

For the worker (spright.worker.runtime), which sends what these return.
"""

from __future__ import annotations

from typing import Any

import orjson

from spright.data import descriptor
from spright.data.descriptor import CALL, GATEWAY, HAS_RESPONSE_META, IN_PARTS, KIND_MASK, TRACED, Descriptor
from spright.host.counters import ERRORS
from spright.host.pool import Pool, TooLarge
from spright.worker.context import Context, body_of, encode, request_meta, response_meta
from spright.worker.failures import error_answer, too_large
from spright.worker.tracing import WorkSpans


def head_meta(ctx: Context, flags: int) -> tuple[bytes | None, int]:
    """The slot metadata that carries the HTTP response's head as this hop shaped it (content
    type, headers: they accumulate along the chain), and the flags that say so; (None, flags)
    when what the slot says stays true."""
    if (ctx.content_type is not None or ctx.response_headers or flags & HAS_RESPONSE_META) and (
            response := response_meta(ctx)):
        return orjson.dumps({**request_meta(ctx), "response": response}), flags | HAS_RESPONSE_META
    return None, flags


class Answers:
    """A worker's outgoing answers: ``id`` its endpoint, ``steps`` its route table's next hops
    (RouteTable.steps), ``max_response`` the largest result (None: what a slot holds)."""

    __slots__ = ("_counters", "_id", "_max_response", "_name", "_pool", "_spans", "_steps")

    def __init__(self, id: int, name: str, pool: Pool, steps: tuple[tuple[tuple[int, int], ...], ...],
                 spans: WorkSpans, counters: memoryview, max_response: int | None) -> None:
        self._id = id
        self._name = name
        self._pool = pool
        self._steps = steps
        self._spans = spans
        self._counters = counters
        self._max_response = max_response

    def forward(self, d: Descriptor, ctx: Context, result: Any, received: int, started: int) -> tuple[bytes, int]:
        """The handler's result, in the request's slot (or a larger one: the request's is
        kept, for the worker to free), for whoever is next: the caller of a call, else the
        chain's next hop (the gateway after its last). Returns the descriptor to send and
        the slot that holds the answer."""
        payload, body_flag = encode(result)
        # a result too large fails before anything is written: failure() answers in the request's slot
        if self._max_response is not None and len(payload) > self._max_response:
            raise too_large(self._name, len(payload), self._max_response)
        pool = self._pool
        meta, flags = head_meta(ctx, (d.flags & (HAS_RESPONSE_META | TRACED)) | body_flag)
        slot, generation = d.slot, d.generation
        try:
            if meta is not None or payload is not body_of(ctx):  # returning ctx.body costs nothing: it is there
                slot, generation = pool.write(slot, generation, payload, meta, d.request_id, True)
        except TooLarge as exc:  # the largest slot, less this result's metadata, is the limit
            raise too_large(self._name, len(payload), exc.largest - (exc.size - len(payload))) from None
        if slot == d.slot:  # else write() moved it
            pool.unhold(slot)  # handed on: the next hop holds it
        status = ctx.status or (d.status if d.status != IN_PARTS else 0)  # a call's asks for parts, no status
        if flags & TRACED:
            self._spans.handled(d, received, started, status or 200)
        if d.flags & KIND_MASK == CALL:
            out = descriptor.reply(d, self._id, flags, status, slot, generation, len(payload))
        else:
            next_hop, kind = self._steps[d.chain][d.hop + 1]
            out = descriptor.hop(next_hop, self._id, kind | flags, d.hop + 1, d.chain, status, slot, generation,
                                 len(payload), d.request_id)
        return out, slot

    def failure(self, d: Descriptor, exc: Exception, received: int, started: int) -> tuple[bytes, int]:
        """``exc``'s answer (spright.worker.failures) in the request's slot (or a larger one,
        the request's kept), for whoever waits: the descriptor, and the slot of the answer."""
        status, body = error_answer(exc, self._name)
        payload = orjson.dumps(body)
        slot = self._pool.write(d.slot, d.generation, payload, b"", d.request_id, True)
        if slot.id == d.slot:
            self._pool.unhold(slot.id)
        if d.flags & TRACED:
            self._spans.handled(d, received, started, status)
        self._counters[ERRORS] += 1
        return descriptor.failure(d, self._id, status, slot.id, slot.generation, len(payload)), slot.id

    def streamed(self, d: Descriptor, ctx: Context, parts: int, received: int, started: int) -> bytes:
        """The END of a streamed answer of ``parts`` parts, to the gateway or the caller; the
        request's (or the call's) slot goes back with it, holding the answer's head when no part
        carried it (a stream of none: an empty answer)."""
        flags = d.flags & (HAS_RESPONSE_META | TRACED)
        if parts == 0:
            meta, flags = head_meta(ctx, flags)
            if meta is not None:
                self._pool.write(d.slot, d.generation, b"", meta, d.request_id, True)
        self._pool.unhold(d.slot)
        call = d.flags & KIND_MASK == CALL
        status = ctx.status or (0 if call else d.status)
        if d.flags & TRACED:
            self._spans.handled(d, received, started, status or 200)
        return descriptor.end_of_stream(d.sender if call else GATEWAY, self._id, flags, parts, d.chain, status,
                                        d.slot, d.generation, d.request_id, d.call_id)
