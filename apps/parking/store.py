"""The car park's SQLite database, shared by the search, index, persist and charging workers.

Each worker process opens its own connection (WAL journal, so readers never wait for the
writer, and a busy timeout, so writers from different processes queue instead of failing).
Within a process, handlers run on one event loop and each statement batch runs without an
``await`` in between, so a transaction is never interleaved with another request's.
Read-modify-write steps use ``BEGIN IMMEDIATE``: two workers deciding "entry or exit?" for the
same car cannot both see it absent.

Plates are matched by their key (``plates.key``: the ``plate`` columns); what the camera read is
kept beside it (``events.read``, ``sessions.entry_read``/``exit_read``) for answers and receipts.
A stay with a read OCR was unsure of carries ``review`` (why) and is not charged until an operator
resolves it (``resolve``).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from apps.datadir import connection, transaction
from apps.parking.plates import fleet, key

SCHEMA = """
CREATE TABLE IF NOT EXISTS vehicles (
    plate TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, permit INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, plate TEXT NOT NULL, gate TEXT NOT NULL, at REAL NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('entry', 'exit')));
CREATE TABLE IF NOT EXISTS presence (
    plate TEXT PRIMARY KEY, entry_event INTEGER NOT NULL REFERENCES events(id), since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, plate TEXT NOT NULL, entry_event INTEGER NOT NULL UNIQUE,
    exit_event INTEGER UNIQUE, entry_at REAL NOT NULL, exit_at REAL, fee_cents INTEGER, receipt TEXT);
CREATE INDEX IF NOT EXISTS sessions_plate ON sessions(plate, exit_at);
"""
# columns added since the first schema: a database kept in --data-dir gains them on first use
COLUMNS = {"events": {"read": "TEXT"},
           "sessions": {"entry_read": "TEXT", "exit_read": "TEXT", "review": "TEXT", "resolved": "TEXT"}}
OWNERS = ("A. Shah", "B. Okafor", "C. Novak", "D. Lindqvist", "E. Moreau", "F. Tanaka", "G. Rossi", "H. Kim")
def connect(path: Path | None = None) -> sqlite3.Connection:
    """This process's connection to the database (created, and seeded, on first use)."""
    return connection("parking", _setup, path)


def _setup(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across crashes of the app, fast
    with transaction(db):
        for statement in filter(str.strip, SCHEMA.split(";")):
            db.execute(statement)
        for table, columns in COLUMNS.items():
            have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        if db.execute("SELECT COUNT(*) FROM vehicles").fetchone()[0] == 0:
            seed_vehicles(db)


def seed_vehicles(db: sqlite3.Connection) -> None:
    """The registry: the fleet's plates, each with an owner, a kind and maybe a permit."""
    rng = random.Random(7)
    rows = [(key(plate), rng.choice(OWNERS), rng.choices(("car", "ev", "van"), (6, 3, 1))[0], int(rng.random() < 0.2))
            for plate in fleet()]
    db.executemany("INSERT OR IGNORE INTO vehicles VALUES (?, ?, ?, ?)", rows)


def vehicle(db: sqlite3.Connection, plate: str) -> dict[str, Any]:
    row = db.execute("SELECT owner, kind, permit FROM vehicles WHERE plate = ?", (plate,)).fetchone()
    if row is None:
        return {"registered": False, "kind": "visitor", "permit": False}
    return {"registered": True, "owner": row["owner"], "kind": row["kind"], "permit": bool(row["permit"])}


def open_session(db: sqlite3.Connection, plate: str) -> dict[str, Any] | None:
    row = db.execute("SELECT id, entry_at FROM sessions WHERE plate = ? AND exit_at IS NULL "
                     "ORDER BY entry_at DESC LIMIT 1", (plate,)).fetchone()
    return {"id": row["id"], "entry_at": row["entry_at"]} if row else None


def record_event(db: sqlite3.Connection, plate: str, gate: str, at: float, read: str | None = None) -> dict[str, Any]:
    """Log a sighting of ``plate`` (a key; ``read``: as read) and flip the car's presence:
    absent → entry, present → exit (atomically)."""
    with transaction(db):
        present = db.execute("SELECT entry_event, since FROM presence WHERE plate = ?", (plate,)).fetchone()
        direction = "exit" if present else "entry"
        event_id = db.execute("INSERT INTO events (plate, gate, at, direction, read) VALUES (?, ?, ?, ?, ?)",
                              (plate, gate, at, direction, read or plate)).lastrowid
        if present:
            db.execute("DELETE FROM presence WHERE plate = ?", (plate,))
            return {"id": event_id, "direction": direction, "entry_event": present["entry_event"],
                    "entry_at": present["since"]}
        db.execute("INSERT INTO presence VALUES (?, ?, ?)", (plate, event_id, at))
        return {"id": event_id, "direction": direction, "entry_event": event_id, "entry_at": at}


def write_session(db: sqlite3.Connection, plate: str, event: dict[str, Any], at: float, read: str | None = None,
                  review: str | None = None) -> dict[str, Any]:
    """Open the session on entry, close it on exit; idempotent per event (a retried hop changes nothing).

    ``read`` is the plate as read at this gate; ``review`` why this read needs an operator (the
    session keeps the first reason it was given). An exit may reach this worker before its entry
    did (two requests in flight for one car), so both directions first make sure the session row exists.
    """
    side = "exit_read" if event["direction"] == "exit" else "entry_read"
    with transaction(db):
        db.execute("INSERT OR IGNORE INTO sessions (plate, entry_event, entry_at) VALUES (?, ?, ?)",
                   (plate, event["entry_event"], event["entry_at"]))
        if event["direction"] == "exit":
            db.execute("UPDATE sessions SET exit_event = ?, exit_at = ? WHERE entry_event = ? AND exit_at IS NULL",
                       (event["id"], at, event["entry_event"]))
        db.execute(f"UPDATE sessions SET {side} = ?, review = COALESCE(review, ?) WHERE entry_event = ?",
                   (read or plate, review, event["entry_event"]))
        row = db.execute("SELECT * FROM sessions WHERE entry_event = ?", (event["entry_event"],)).fetchone()
    return dict(row)


def record_charge(db: sqlite3.Connection, session_id: int, fee_cents: int, receipt: str) -> bool:
    """Record a closed stay's charge, unless it awaits review (False: nothing charged)."""
    with transaction(db):
        done = db.execute("UPDATE sessions SET fee_cents = ?, receipt = ? WHERE id = ? "
                          "AND (review IS NULL OR resolved IS NOT NULL)", (fee_cents, receipt, session_id))
    return done.rowcount == 1


def state(row: dict[str, Any]) -> str:
    """``review`` (an unsure read, not resolved yet), ``open``, ``charged``, ``void`` (resolved: no
    charge) or ``closed`` (its charge not recorded yet)."""
    if row.get("review") and not row.get("resolved"):
        return "review"
    if row.get("exit_at") is None:
        return "open"
    if row.get("resolved") == "void":
        return "void"
    return "charged" if row.get("fee_cents") is not None else "closed"


def resolve(db: sqlite3.Connection, session_id: int, plate: str | None, read: str | None) -> dict[str, Any] | None:
    """An operator's word on a closed stay under review: it was ``plate`` (a key; ``read``: as they
    typed it), to be charged now; or, with ``plate`` None, it is voided (closed, never charged).
    Returns the stay; None when no closed stay ``session_id`` awaits review."""
    with transaction(db):
        row = db.execute("SELECT * FROM sessions WHERE id = ? AND review IS NOT NULL AND resolved IS NULL "
                         "AND exit_at IS NOT NULL", (session_id,)).fetchone()
        if row is None:
            return None
        if plate is None:
            db.execute("UPDATE sessions SET resolved = 'void' WHERE id = ?", (session_id,))
        else:
            db.execute("UPDATE sessions SET plate = ?, resolved = ?, entry_read = ?, exit_read = ? WHERE id = ?",
                       (plate, read, read, read, session_id))
        return dict(db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone())


def sessions(db: sqlite3.Connection, plate: str | None, only_open: bool, limit: int,
             review: bool = False) -> list[dict[str, Any]]:
    """Newest first; ``plate`` is a key; ``review``: only the stays awaiting an operator."""
    query, args = "SELECT * FROM sessions", []
    clauses = []
    if plate:
        clauses.append("plate = ?")
        args.append(plate)
    if only_open:
        clauses.append("exit_at IS NULL")
    if review:
        clauses.append("review IS NOT NULL AND resolved IS NULL")
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [dict(row) for row in rows]
