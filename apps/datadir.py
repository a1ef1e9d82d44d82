"""Where the apps keep their SQLite files: configurable, and never inside the repository.

``SPRIGHT_DATA_DIR`` chooses the directory (``python -m apps.parking --data-dir DIR`` sets it);
a specific file can be forced per app (``SPRIGHT_PARKING_DB``, ``SPRIGHT_MOTION_DB``). Without
either, a worker of a running node uses the node's own runtime directory, which every worker
of that node shares and which disappears when the node stops: a demo leaves nothing behind.
Anything else (a REPL, ``TestClient``) gets a per-process temporary directory.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from spright.host.nodefile import NODE_DIR_ENV

REDIS_ENV = "SPRIGHT_REDIS_URL"  # an app that can keep its state in Redis does so when this names one


def database_path(app: str) -> Path:
    """The SQLite file of ``app`` (``parking``, ``motion``, ``boutique``), its directory created."""
    forced = os.environ.get(f"SPRIGHT_{app.upper()}_DB")
    if forced:
        path = Path(forced)
    elif os.environ.get("SPRIGHT_DATA_DIR"):
        path = Path(os.environ["SPRIGHT_DATA_DIR"]) / f"{app}.sqlite3"
    elif os.environ.get(NODE_DIR_ENV):  # set by the supervisor for its workers
        path = Path(os.environ[NODE_DIR_ENV]) / "data" / f"{app}.sqlite3"
    else:
        path = Path(tempfile.gettempdir()) / f"spright-{app}-{os.getpid()}" / f"{app}.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


_connections: dict[Path, sqlite3.Connection] = {}


def connection(app: str, setup: Callable[[sqlite3.Connection], None], path: Path | None = None) -> sqlite3.Connection:
    """This process's connection to ``app``'s database, opened and ``setup`` on first use.

    Autocommit (transactions are explicit, see ``transaction``), rows by name, WAL so readers
    never block the writer, and a busy timeout for the other workers of the node.
    """
    path = path or database_path(app)
    db = _connections.get(path)
    if db is None:
        db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA journal_mode = WAL")
        setup(db)
        _connections[path] = db
    return db


def forget_connections() -> None:
    """Close every cached connection (tests that swap databases between runs)."""
    for db in _connections.values():
        db.close()
    _connections.clear()


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): the write lock is taken up front."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
