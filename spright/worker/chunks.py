"""A request body in chunks, as ``ctx.stream()`` gives it.

``Whole``: one chunk, for a body that came whole; a ``BodyStream``'s chunks for one that
arrives after its request (a function registered with ``stream_body=True``: spright.worker.
bodies). Iterator classes, not async generators: mypyc compiles none (spright.native).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class BodyStream(Protocol):
    """A request body that arrives after its request (spright.worker.bodies.BodyFlow)."""

    def chunks(self) -> AsyncIterator[bytes]: ...


class Whole:
    """``ctx.stream()`` of a body that came whole: one chunk (none when empty)."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __aiter__(self) -> Whole:
        return self

    async def __anext__(self) -> bytes:
        body, self._body = self._body, b""
        if not body:
            raise StopAsyncIteration
        return body
