"""The parts of one stream put back in order (spright.worker.streams has the protocol).

Parts carry their number mod 256 (a PART's ``hop`` byte); data planes that move descriptors
over several connections (http, grpc) may deliver them out of order, and END (which says how
many parts came before it, mod 256) may overtake the last of them. With at most
``STREAM_WINDOW`` (< 256) parts in flight, a number names one part unambiguously.

Every reader of streams uses it: the gateway's ``Outflow`` (spright.front.streams, parts to an
HTTP client), a caller's ``Inflow`` (spright.worker.inflows, parts to ``ctx.call_stream``) and
a function's ``BodyFlow`` (spright.worker.bodies, a request body's parts to ``ctx.stream()``).
"""

from __future__ import annotations

from spright.data.descriptor import Descriptor


class Reorder:
    """``put`` each PART as it arrives: it returns the part if it is the next in order (then
    ``next`` the early parts it lets through, one by one), None while parts before it are
    missing. ``finish`` with END; ``complete`` once every part before END is through."""

    __slots__ = ("count", "early", "end")

    def __init__(self) -> None:
        self.count = 0  # parts put through in order so far
        self.early: dict[int, Descriptor] = {}  # by number mod 256: parts that came before their turn
        self.end: Descriptor | None = None  # END, once it came

    def put(self, d: Descriptor) -> Descriptor | None:
        if d.hop != self.count & 0xFF:
            self.early[d.hop] = d
            return None
        self.count += 1
        return d

    def next(self) -> Descriptor | None:
        """The early part whose turn it is now, if it came."""
        early = self.early
        if early:
            d = early.pop(self.count & 0xFF, None)
            if d is not None:
                self.count += 1
            return d
        return None

    def finish(self, end: Descriptor) -> None:
        self.end = end

    @property
    def complete(self) -> bool:
        end = self.end
        return end is not None and not self.early and end.hop == self.count & 0xFF

    def left(self) -> list[Descriptor]:
        """What is still held (early parts, END), emptied: the stream is cut short and their
        slots are to be freed."""
        held = list(self.early.values())
        if self.end is not None:
            held.append(self.end)
        self.early.clear()
        self.end = None
        return held
