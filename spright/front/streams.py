"""A streamed answer at its gateway: the PART descriptors of a generator handler put back in
order, each written to the client as soon as it is in order and the client can take it, and
CREDIT sent back to the producer as parts are taken (spright.worker.streams has the other
end and the protocol).

The response's head goes out with the first part (its status and headers ride in that part's
slot). Parts that arrive before the client's connection is ready for them (an earlier
pipelined response still going out) or while the client reads nothing wait here, holding
their slots, and are not credited: the producer stops after ``STREAM_WINDOW`` of them. The
stream ends at END (after all its parts), or is cut short: the handler failed (ERROR), the
route's timeout passed between two parts, the node shuts down (the client sees the chunked
body end without its last chunk), or the client went away (the producer gets CANCEL).
"""

from __future__ import annotations

import logging
from typing import Protocol

from spright.data import descriptor
from spright.data.descriptor import CREDIT_EVERY, STREAM_WINDOW, Descriptor
from spright.data.reorder import Reorder
from spright.data.response import PartSink
from spright.host.pools import NodePool

log = logging.getLogger("spright.front.streams")


class Host(Protocol):
    """What a stream needs of its gateway (spright.front.gateway.Gateway)."""

    pool: NodePool
    endpoint: int

    def send(self, record: bytes) -> None:
        """A descriptor from the gateway's endpoint, in its next batch."""

    def stream_head(self, outflow: Outflow, first: Descriptor) -> None:
        """The first part is in: the response's head goes to the client, with ``outflow`` as its body."""

    def stream_over(self, request_id: int, status: int, failed: bool) -> None:
        """The stream ended (``failed``: cut short): the request is over."""


class Outflow:
    """One request's streamed answer, from its producer (an endpoint) to the client's sink."""

    __slots__ = ("_credited", "_held", "_host", "_order", "_over", "_producer", "_sink", "_taken", "call_id",
                 "request_id", "status")

    def __init__(self, host: Host, first: Descriptor) -> None:
        self._host = host
        self.request_id, self.call_id = first.request_id, first.call_id
        self._producer = first.sender
        self.status = 200
        self._order = Reorder()
        self._held: list[Descriptor] = []  # in order, waiting for the sink
        self._sink: PartSink | None = None
        self._taken = 0  # parts written to the sink
        self._credited = 0
        self._over = False

    # -- from the producer -------------------------------------------------------------------
    def put(self, d: Descriptor) -> None:
        """A PART, in whatever order the data plane delivered it."""
        if self._over:
            self._host.pool.free(d.slot, d.generation)
            return
        order = self._order
        first = order.count == 0
        part = order.put(d)
        while part is not None:
            self._in_order(part, first)
            first = False
            part = order.next()
        self._maybe_done()

    def _in_order(self, d: Descriptor, first: bool) -> None:
        if self._over:  # cut short meanwhile (the head went to a HEAD request, a client gone...)
            self._host.pool.free(d.slot, d.generation)
        elif first:  # held first: the head's answer may attach the client (which takes it) or cancel
            self.status = d.status or 200
            self._held.append(d)
            self._host.stream_head(self, d)
        elif self._sink is not None and not self._held and self._sink.writable():
            self._write(d)
        else:
            self._held.append(d)

    def finish(self, d: Descriptor) -> None:
        """END: the stream is over once every part before it is written."""
        if self._over:
            self._host.pool.free(d.slot, d.generation)
            return
        self._order.finish(d)
        self._maybe_done()

    def _maybe_done(self) -> None:
        order = self._order
        end = order.end
        if end is None or self._held or self._sink is None or not order.complete:
            return
        self._over = True
        self._host.pool.free(end.slot, end.generation)
        self._sink.end()
        self._host.stream_over(self.request_id, self.status, False)

    def _write(self, d: Descriptor) -> None:
        assert self._sink is not None
        part = self._host.pool.take(d.slot, d.generation, d.length)
        if part is None:  # never expected: a part naming a slot that is not its own
            log.error("gateway: a part of request %d names a stale slot: %s", self.request_id, d)
            self.abort()
            self._host.stream_over(self.request_id, 502, True)
            return
        self._sink.write(part)
        self._taken += 1
        if self._taken - self._credited >= CREDIT_EVERY:
            self._credit()

    def _credit(self) -> None:
        self._credited = self._taken
        self._host.send(descriptor.credit(self._producer, self._host.endpoint, self.request_id, self.call_id,
                                          self._taken))

    # -- from the client's side ----------------------------------------------------------------
    def attach(self, sink: PartSink) -> None:
        self._sink = sink
        if self._over:  # cut short before the client's turn came: what was in order, then the cut
            self._cut()
            return
        self.resume()

    def resume(self) -> None:
        sink = self._sink
        if sink is None or self._over:
            return
        held = self._held
        while held and sink.writable():
            self._write(held.pop(0))
            if self._over:
                return
        # the parts taken since the last CREDIT, but only when the producer may be waiting for
        # them (a window's worth sent uncredited): not after every first part, whose CREDIT would
        # cost the stream a descriptor and its producer a wake-up for nothing (_write credits
        # every CREDIT_EVERY parts, which keeps a producer that is not waiting going)
        order = self._order
        if (self._taken > self._credited and sink.writable()
                and order.count + len(order.early) - self._credited >= STREAM_WINDOW):
            self._credit()
        self._maybe_done()

    def cancel(self, complete: bool = False) -> None:
        """The client went away (or, ``complete``, needs no body): the producer is told to
        stop, the parts here are freed."""
        self._drop(self._held)
        if not self._over:
            self._stop()
            self._host.stream_over(self.request_id, self.status if complete else 499, True)

    def abort(self) -> None:
        """Cut short from the node's side (failure, timeout, shutdown): the parts already in
        order still reach the client, then it sees the answer end without its end."""
        if not self._over:
            self._stop()
            if self._sink is not None:
                self._cut()

    def _cut(self) -> None:
        sink = self._sink
        assert sink is not None
        pool = self._host.pool
        for d in self._held:  # at most a window's worth: the connection buffers them, whatever the client reads
            if (part := pool.take(d.slot, d.generation, d.length)) is not None:
                sink.write(part)
        self._held.clear()
        sink.abort()

    def _stop(self) -> None:
        self._over = True
        self._host.send(descriptor.cancel(self._producer, self._host.endpoint, self.request_id, self.call_id))
        self._drop(self._order.left())  # early parts, END

    def _drop(self, parts: list[Descriptor]) -> None:
        for d in parts:
            self._host.pool.free(d.slot, d.generation)
        parts.clear()
