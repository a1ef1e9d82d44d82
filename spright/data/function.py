"""A registered function and a chain of them, as the DSL declares them: plain data that the
route table is compiled from and a worker runs (``Function.handler``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spright.data.autoscale import ScalePolicy

Handler = Callable[[Any], Any]


@dataclass(frozen=True, eq=False)
class Function:
    """A registered handler. Calling it calls the handler (handy in unit tests)."""

    name: str
    handler: Handler
    concurrency: int = 64
    domain: str | None = None  # security domain; None: the app's own
    process: str | None = None  # worker process to share with other functions; None: its own
    instances: int = 1  # worker processes serving it, each its own endpoint
    max_instances: int = 1  # how many it may grow to while running (endpoints are set aside for them)
    stateful: bool = False  # its state lives in its process: it runs as exactly one instance
    autoscale: ScalePolicy | None = None  # the supervisor scales its instances on its requests in flight
    stream_body: bool = False  # reads its request body as it arrives (ctx.stream()): first of its chains only

    def __call__(self, ctx: Any) -> Any:
        return self.handler(ctx)

    def __rshift__(self, other: Function | Chain) -> Chain:
        return Chain((self,)) >> other


@dataclass(frozen=True)
class Chain:
    """Hops in order; ``a >> b >> a`` is fine: a function may appear more than once."""

    hops: tuple[Function | str, ...]

    def __rshift__(self, other: Function | Chain | str) -> Chain:
        tail = other.hops if isinstance(other, Chain) else (other,)
        return Chain(self.hops + tail)
