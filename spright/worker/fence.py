"""Slots a handler's leftovers still point into, kept out of reuse until those are gone.

When a handler returns, its worker releases ``ctx.body`` (spright.worker.context: ``end``): a
background task that kept the body, or ``ctx``, then gets an error instead of touching a slot
that may belong to another request by then. What the handler *derived* from the body (a
slice ``ctx.body[4:]``, a numpy array or ctypes buffer over it) cannot be released from
outside; the worker sees that it is alive (``end`` returns False), and the slot is
quarantined: the answer moves to a fresh slot, and the request's slot stays held by the
worker (no sweep frees it) until the last such view is gone, then is freed. A late write
through such a view lands in a slot nobody else uses.
"""

from __future__ import annotations

import asyncio
import logging

from spright.data.descriptor import Descriptor
from spright.host.pool import Pool, read_meta
from spright.worker.context import Context, inner_of

log = logging.getLogger("spright.worker")

RETRY = 0.5  # seconds between looks at whether a quarantined slot's views are gone


def relocate(pool: Pool, out: bytes, owner: int) -> bytes:
    """``out`` (a descriptor) with its answer copied to a fresh slot owned by ``owner``."""
    d = Descriptor.unpack(out)
    view = pool.view(d.slot)
    try:
        with read_meta(view) as meta:
            slot = pool.put(view[: d.length], bytes(meta), owner)
    finally:
        view.release()
    return d._replace(slot=slot.id, generation=slot.generation).pack()


class Quarantine:
    """The slots of one worker kept out of reuse: (the view whose exports say the handler's
    leftovers are alive, slot, generation)."""

    def __init__(self, pool: Pool, holder: int, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._pool = pool
        self._holder = holder
        self._loop = loop
        self._name = name
        self._kept: list[tuple[memoryview, int, int]] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, ctx: Context, d: Descriptor, out: bytes | None, slot: int) -> bytes | None:
        """A view derived from ``ctx.body`` outlived the handler of ``d``: the request's slot is
        kept out of reuse until it is gone, the answer (``out``, in ``slot``) moved out of it
        first. Returns the descriptor to send in place of ``out``."""
        inner = inner_of(ctx)
        assert inner is not None
        if out is not None and slot == d.slot:
            try:
                out = relocate(self._pool, out, d.request_id)
            except Exception:  # PoolExhausted: the answer stays, the slot goes on as it would have
                log.exception("%s: could not move an answer out of a slot a handler's view outlived", self._name)
                return out
        if not self._pool.hold(d.slot, d.generation, self._holder):
            log.warning("%s: a view of a handler's body outlived it, and its slot was already freed", self._name)
            return out
        log.warning("%s: a view derived from ctx.body (a slice, an array...) outlived its handler: its slot "
                    "is kept out of reuse until it is gone; copy what a background task needs", self._name)
        self._kept.append((inner, d.slot, d.generation))
        if self._timer is None:
            self._timer = self._loop.call_later(RETRY, self._retry)
        return out

    def _retry(self) -> None:
        self._timer = None
        kept = []
        for inner, slot, generation in self._kept:
            try:
                inner.release()
            except BufferError:
                kept.append((inner, slot, generation))
                continue
            self._pool.free(slot, generation)
        self._kept = kept
        if kept:
            self._timer = self._loop.call_later(RETRY, self._retry)

    def close(self) -> None:
        """The worker stops: its holds go with it (the node frees them, spright.host.pool)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._kept.clear()
