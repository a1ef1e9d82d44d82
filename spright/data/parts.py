"""The parts of one stream put back in order: each PART carries its number mod 256 (the
descriptor's ``hop`` byte), and data planes that move descriptors over several connections
(http, grpc) may deliver them out of order. Both ends of a stream use it: a streamed answer
at its gateway (spright.front.streams.Outflow) and a streamed request body at its function
(spright.worker.bodies). A window of fewer than 256 parts in flight keeps the numbers
unambiguous (``descriptor.STREAM_WINDOW``).
"""

from __future__ import annotations

from spright.data.descriptor import Descriptor


class InOrder:
    """Parts in, runs of them out in order; ``count``: how many came out so far."""

    __slots__ = ("count", "early")

    def __init__(self) -> None:
        self.count = 0
        self.early: dict[int, Descriptor] = {}  # by number mod 256: parts that came before their turn

    def put(self, d: Descriptor) -> list[Descriptor]:
        """``d`` and the parts that waited for it, in order; none while one before it is missing."""
        if d.hop != self.count & 0xFF:
            self.early[d.hop] = d
            return []
        run = [d]
        self.count += 1
        early = self.early
        while early and self.count & 0xFF in early:
            run.append(early.pop(self.count & 0xFF))
            self.count += 1
        return run

    def complete(self, end: Descriptor) -> bool:
        """Every part before END ``end`` (which says how many, mod 256) came out."""
        return not self.early and end.hop == self.count & 0xFF

    def drop(self) -> list[Descriptor]:
        """The parts still waiting for their turn, taken out (their slots are to be freed)."""
        early = list(self.early.values())
        self.early.clear()
        return early
