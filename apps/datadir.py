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
from pathlib import Path

from spright.supervisor import NODE_DIR_ENV


def database_path(app: str) -> Path:
    """The SQLite file of ``app`` (``parking``, ``motion``), its directory created."""
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


def open_sqlite(path: Path) -> sqlite3.Connection:
    """A connection as the apps use them: autocommit (explicit transactions), rows by name,
    WAL so readers never block the writer, and a busy timeout for the other workers."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA journal_mode = WAL")
    return db
