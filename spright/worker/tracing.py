"""A worker's side of tracing: one span record per traced piece of work, written into this
endpoint's ring (spright.host.spans) before the descriptor that ends the work is sent, so
the gateway that receives the answer finds every record of the request already there.

What is traced is the request's choice, made once by the gateway (the descriptor's TRACED
flag, handed on to the next hop and to every ``ctx.call``); an untraced descriptor costs the
worker one flag test. Times are ``perf_counter_ns()``: CLOCK_MONOTONIC on Linux, comparable
across the node's processes.
"""

from __future__ import annotations

from time import perf_counter_ns

from spright.data.descriptor import CALL, KIND_MASK, Descriptor
from spright.data.traces import CALL as CALL_SPAN
from spright.data.traces import CALLED, HOP
from spright.host.spans import SpanWriter


class WorkSpans:
    """Writes this endpoint's records; without a writer (the node does not trace) nothing."""

    __slots__ = ("_endpoint", "_writer")

    def __init__(self, writer: SpanWriter | None, endpoint: int) -> None:
        self._writer = writer
        self._endpoint = endpoint

    def handled(self, d: Descriptor, received: int, started: int, status: int) -> None:
        """The handler of ``d`` (received at ``received``, started at ``started``; 0 when it
        never ran) ended with ``status``; its answer is about to leave."""
        if self._writer is None:
            return
        kind = CALLED if d.flags & KIND_MASK == CALL else HOP
        now = perf_counter_ns()
        self._writer.write(kind, 0, self._endpoint, d.sender, d.hop, d.chain, status, d.request_id, d.call_id,
                           received or now, started or now, now, 0)

    def called(self, trace: tuple[int, int, int, int], callee: int, call_id: int, status: int) -> None:
        """A traced ``ctx.call`` is over: ``trace`` is (sent at, request id, chain, depth) as
        ``Calls.open`` kept it; ``status`` its outcome."""
        if self._writer is None:
            return
        sent, request_id, chain, depth = trace
        self._writer.write(CALL_SPAN, 0, self._endpoint, callee, depth, chain, status, request_id, call_id, sent,
                           perf_counter_ns(), 0, 0)
