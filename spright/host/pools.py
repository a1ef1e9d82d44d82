"""The node's payload memory: one pool per security domain.

SPRIGHT gives each security domain its own memory pool, so that a function can map the
payloads of its own domain's requests and no other's. Here each domain's ``Pool`` has its own
segments (unguessable names, mode 0600) and lock, and every slot id names its domain in its top
bits. The gateway, which receives every request, maps every domain's pool through a
``NodePool``; a worker attaches to its own domain's pool only (``handle(domain)``), and its
pool refuses any slot id of another domain as it does an out-of-range one.

A ``NodePool`` answers the slot operations the gateway uses by the slot's domain (with one
domain, its pool's own methods answer them: no dispatch on the hot path), and hands out each
domain's allocator (the gateway binds one per chain).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from spright.data.config import PoolConfig
from spright.host.pool import DOMAIN_SHIFT, Payload, Pool, PoolHandle, Slot

__all__ = ["NodePool"]

# the operations that find their pool by the slot id (a pool refuses another domain's ids itself)
_BY_SLOT = ("free", "is_current", "take", "view", "write", "set_meta", "grow")


class NodePool:
    def __init__(self, pools: Iterable[Pool]) -> None:
        self._by_domain: dict[int, Pool] = {pool.domain: pool for pool in pools}
        self.total = sum(pool.total for pool in self._by_domain.values())
        if len(self._by_domain) == 1:  # one domain (most apps): its pool answers every slot operation itself
            (pool,) = self._by_domain.values()
            for name in _BY_SLOT:
                setattr(self, name, getattr(pool, name))

    @classmethod
    def attach(cls, handles: Iterable[PoolHandle], *, tracked: bool = True) -> NodePool:
        """The pools ``handles`` name, in another process (a further gateway: every domain's;
        a worker: its own domain's). ``tracked``: see ``spright.host.pool.attach_segment``."""
        return cls(Pool.attach(handle, tracked=tracked) for handle in handles)

    @property
    def handles(self) -> list[PoolHandle]:
        return [pool.handle for pool in self._by_domain.values()]

    @classmethod
    def create(cls, config: PoolConfig, domains: Iterable[int]) -> NodePool:
        """A pool of ``config``'s shape for each of ``domains`` (RouteTable domain indexes, 1..15)."""
        created: list[Pool] = []
        try:
            for domain in sorted(set(domains)):
                created.append(Pool.create(config, domain))
        except BaseException:
            for pool in created:
                pool.close()
            raise
        return cls(created)

    def domain(self, domain: int) -> Pool:
        return self._by_domain[domain]

    def handle(self, domain: int) -> PoolHandle:
        """What a worker of ``domain`` attaches to: its own domain's pool, nothing else."""
        return self._by_domain[domain].handle

    def _of(self, slot: int) -> Pool | None:
        return self._by_domain.get(slot >> DOMAIN_SHIFT)

    # -- the slot operations, each in the slot's own domain ----------------------------------
    def allocator(self, domain: int) -> Callable[[int, int], Slot]:
        """``alloc(size, owner)`` in ``domain``'s pool (bound once, called per request)."""
        return self._by_domain[domain].alloc

    def free(self, slot: int, generation: int) -> bool:
        pool = self._of(slot)
        return pool is not None and pool.free(slot, generation)

    def is_current(self, slot: int, generation: int) -> bool:
        pool = self._of(slot)
        return pool is not None and pool.is_current(slot, generation)

    def release_holds(self, holder: int) -> list[tuple[int, int, int]]:
        return [held for pool in self._by_domain.values() for held in pool.release_holds(holder)]

    def take(self, slot: int, generation: int, length: int) -> bytes | None:
        pool = self._of(slot)
        return None if pool is None else pool.take(slot, generation, length)

    def view(self, slot: int) -> memoryview:
        """The slot's whole capacity; ``slot`` must be current (``is_current``)."""
        return self._by_domain[slot >> DOMAIN_SHIFT].view(slot)

    def write(self, slot: int, generation: int, payload: Payload, meta: bytes | None, owner: int) -> Slot:
        return self._by_domain[slot >> DOMAIN_SHIFT].write(slot, generation, payload, meta, owner)

    def set_meta(self, slot: Slot, used: int, meta: bytes, owner: int) -> Slot:
        return self._by_domain[slot.id >> DOMAIN_SHIFT].set_meta(slot, used, meta, owner)

    def grow(self, slot: Slot, used: int, size: int, owner: int) -> Slot:
        return self._by_domain[slot.id >> DOMAIN_SHIFT].grow(slot, used, size, owner)

    # -- the node's view ---------------------------------------------------------------------
    def in_use(self) -> int:
        return sum(pool.in_use() for pool in self._by_domain.values())

    def sweep(self, live_owners: set[int], gateway: int = 0) -> int:
        return sum(pool.sweep(live_owners, gateway) for pool in self._by_domain.values())

    @property
    def segment_names(self) -> list[str]:
        return [name for pool in self._by_domain.values() for name in pool.segment_names]

    def close(self) -> None:
        for pool in self._by_domain.values():
            pool.close()
