"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the ``traceparent`` and
``tracestate`` headers a traced request arrives with and leaves with, and the sampler that
decides which requests are traced.

Parsing is strict where the spec is (lower-case hex only, all-zero ids and version ``ff``
invalid), because an invalid ``traceparent`` is not an error to report: the spec says to start
a new trace and drop ``tracestate``, so ``parse`` answers None and the caller does just that.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

# The first 55 characters of every version's traceparent: version, trace id, parent id, flags.
_FIELDS = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_LENGTH = 55  # version 00's exact length; a later version's least
_SAMPLED = 0x01  # trace-flags bit 0; the other bits are not ours to interpret
_MAX_TRACESTATE = 512  # characters, and list members, the spec lets a vendor drop beyond
_MAX_MEMBERS = 32
_OWS = " \t"  # the optional whitespace HTTP allows around a field value (RFC 9110, 5.6.3)

# Trace and span ids only need to be unique, not unguessable (they travel in clear headers):
# a Mersenne Twister is enough, and far cheaper than secrets per traced request.
_random = random.Random()
# re-seeded in a forked child (a worker forked from the node's template), as Python's own
# ``random`` is: else every copy would hand out the same ids
os.register_at_fork(after_in_child=_random.seed)


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A request's incoming trace context: ``parent_id`` is the caller's span id (0: none,
    when this node starts the trace), ``tracestate`` the vendors' opaque list ("" if none)."""

    trace_id: int
    parent_id: int
    sampled: bool
    tracestate: str = ""


def parse(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    """The context the headers carry, or None when ``traceparent`` is missing or invalid
    (then ``tracestate`` is ignored too: the caller starts a new trace)."""
    if traceparent is None:
        return None
    value = traceparent.strip(_OWS)
    found = _FIELDS.fullmatch(value, 0, _LENGTH)
    if found is None:
        return None
    version, trace, parent, flags = found.groups()
    if version == "ff" or (version == "00" and len(value) != _LENGTH):
        return None
    # A later version may append fields, each after a dash; what it appends is not ours to read.
    if len(value) > _LENGTH and value[_LENGTH] != "-":
        return None
    trace_id, parent_id = int(trace, 16), int(parent, 16)
    if not trace_id or not parent_id:
        return None
    return TraceContext(trace_id, parent_id, bool(int(flags, 16) & _SAMPLED), _tracestate(tracestate))


def _tracestate(value: str | None) -> str:
    """``tracestate`` passed on as it came, unless it is over the spec's limits (then dropped
    whole: cutting a vendor's list where we cannot tell which members matter is no better)."""
    if value is None:
        return ""
    value = value.strip(_OWS)
    if len(value) > _MAX_TRACESTATE:
        return ""
    if sum(1 for member in value.split(",") if member.strip(_OWS)) > _MAX_MEMBERS:
        return ""
    return value


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """The version-00 ``traceparent`` naming ``span_id`` as the parent of what comes next."""
    if not 0 < trace_id < 1 << 128 or not 0 < span_id < 1 << 64:
        raise ValueError(f"traceparent needs a non-zero 128-bit trace id and 64-bit span id, "
                         f"got {trace_id:#x} and {span_id:#x}")
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def new_trace_id() -> int:
    """A random non-zero 128-bit trace id (unique, not secret: see ``_random``)."""
    while not (trace_id := _random.getrandbits(128)):
        pass
    return trace_id


def new_span_id() -> int:
    """A random non-zero 64-bit span id (unique, not secret)."""
    while not (span_id := _random.getrandbits(64)):
        pass
    return span_id


class Sampler:
    """Which requests are traced. Head sampling decides when the request arrives: the
    caller's sampled flag if it sent a valid ``traceparent`` (OpenTelemetry's default
    ParentBased sampler), else a random draw at ``rate``. Tail rules decide at the end, once
    the status and duration are known: keep every request answered 5xx (``errors``), or
    taking at least ``slower_than`` seconds. A tail rule needs every request recorded, since
    any may turn out to be kept (``records_all``)."""

    __slots__ = ("_slower_ns", "errors", "rate", "slower_than")

    def __init__(self, rate: float = 0.0, slower_than: float | None = None, errors: bool = False) -> None:
        if not 0.0 <= rate <= 1.0:  # NaN fails this too
            raise ValueError(f"sampling rate must be within [0, 1], got {rate!r}")
        if slower_than is not None and not slower_than > 0:
            raise ValueError(f"slower_than must be a positive number of seconds, got {slower_than!r}")
        self.rate = rate
        self.slower_than = slower_than
        self.errors = errors
        self._slower_ns = None if slower_than is None else round(slower_than * 1e9)

    @property
    def records_all(self) -> bool:
        """Every request must be recorded: a tail rule decides only once it has ended."""
        return self._slower_ns is not None or self.errors

    @property
    def off(self) -> bool:
        """Nothing is sampled by this node's own choice (no rate, no tail rule)."""
        return self.rate == 0.0 and not self.records_all

    def head(self, parent: TraceContext | None) -> bool:
        """Whether the request is sampled from the start (and says so downstream)."""
        if parent is not None:
            return parent.sampled
        return _random.random() < self.rate

    def keep(self, head_sampled: bool, status: int, duration_ns: int) -> bool:
        """Whether a recorded request is exported, once its status and duration are known."""
        return (head_sampled
                or (self.errors and status >= 500)
                or (self._slower_ns is not None and duration_ns >= self._slower_ns))
