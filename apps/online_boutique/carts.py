"""Where the cart service keeps carts: SQLite by default, Redis when the user points at one.

Upstream Online Boutique keeps carts in Redis so that a cart outlives the service's process;
so do we. By default an embedded SQLite file (apps/datadir.py: the node's runtime directory
unless ``--data-dir``/``SPRIGHT_DATA_DIR`` says where), so a SIGKILLed or restarted cart
worker finds every cart where it was. ``python -m apps.online_boutique --redis URL`` (or
``SPRIGHT_REDIS_URL``) keeps them in Redis instead, a hash per user, as upstream's cart does.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Protocol

from apps.datadir import REDIS_ENV, connection, transaction

MAX_QUANTITY = 1_000_000  # per product line; beyond this a request is surely a mistake
KNOWN_CARTS = 65_536  # carts a SQLite store keeps in memory too; past it, it starts over (memory stays bounded)


class TooMany(ValueError):
    """An add that would take a product line past ``MAX_QUANTITY``."""


class Carts(Protocol):
    async def get(self, user_id: str) -> dict[str, int]: ...

    async def add(self, user_id: str, product_id: str, quantity: int) -> dict[str, int]: ...

    async def empty(self, user_id: str) -> None: ...


class SqliteCarts:
    """One row per (user, product), in insertion order; each change one transaction. What a
    worker read or wrote is kept in memory too (reads, the common case, cost no query on the
    table), until another process writes the file: a second instance, or the next revision of
    the cart during a reload (SQLite's data_version says so)."""

    def __init__(self) -> None:
        self._db = connection("boutique", _setup)
        self._known: dict[str, dict[str, int]] = {}
        self._version = -1  # the file's data_version when ``_known`` was last right

    async def get(self, user_id: str) -> dict[str, int]:
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if version != self._version:  # another connection committed since: what is known may be stale
            self._known.clear()
            self._version = version
        items = self._known.get(user_id)
        if items is None:
            rows = self._db.execute("SELECT product_id, quantity FROM cart_items WHERE user_id = ? ORDER BY seq",
                                    (user_id,))
            if len(self._known) >= KNOWN_CARTS:
                self._known.clear()
            items = self._known[user_id] = {row["product_id"]: row["quantity"] for row in rows}
        return dict(items)

    async def add(self, user_id: str, product_id: str, quantity: int) -> dict[str, int]:
        with transaction(self._db) as db:
            row = db.execute("SELECT quantity FROM cart_items WHERE user_id = ? AND product_id = ?",
                             (user_id, product_id)).fetchone()
            updated = (row["quantity"] if row else 0) + quantity
            if updated > MAX_QUANTITY:
                raise TooMany(f"at most {MAX_QUANTITY} of one product per cart")
            db.execute("INSERT INTO cart_items (user_id, product_id, quantity) VALUES (?, ?, ?) "
                       "ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = excluded.quantity",
                       (user_id, product_id, updated))
        self._known.pop(user_id, None)  # read back once, in the file's order
        return await self.get(user_id)

    async def empty(self, user_id: str) -> None:
        self._db.execute("DELETE FROM cart_items WHERE user_id = ?", (user_id,))
        self._known[user_id] = {}


def _setup(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across a crash of the process, not of the machine
    db.execute("CREATE TABLE IF NOT EXISTS cart_items (seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, "
               "product_id TEXT NOT NULL, quantity INTEGER NOT NULL, UNIQUE (user_id, product_id))")


class RedisCarts:
    """A hash per user (``cart:<user>``: product -> quantity), as upstream's cart service."""

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self._redis = redis.asyncio.Redis.from_url(url, decode_responses=True)

    async def get(self, user_id: str) -> dict[str, int]:
        items = await self._redis.hgetall(f"cart:{user_id}")
        return {product: int(quantity) for product, quantity in items.items()}

    async def add(self, user_id: str, product_id: str, quantity: int) -> dict[str, int]:
        updated = await self._redis.hincrby(f"cart:{user_id}", product_id, quantity)
        if updated > MAX_QUANTITY:
            await self._redis.hincrby(f"cart:{user_id}", product_id, -quantity)
            raise TooMany(f"at most {MAX_QUANTITY} of one product per cart")
        return await self.get(user_id)

    async def empty(self, user_id: str) -> None:
        await self._redis.delete(f"cart:{user_id}")


_carts: Carts | None = None


def carts() -> Carts:
    """This process's cart store, chosen once by ``SPRIGHT_REDIS_URL``."""
    global _carts
    if _carts is None:
        url = os.environ.get(REDIS_ENV)
        _carts = RedisCarts(url) if url else SqliteCarts()
    return _carts
