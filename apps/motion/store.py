"""The actuator's state in SQLite: each zone's light, and alarm records.

Only the actuator process writes it; readers never wait (WAL). The path comes from
apps.datadir (``SPRIGHT_MOTION_DB`` / ``SPRIGHT_DATA_DIR`` / the node's runtime directory).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

from apps.datadir import connection, transaction
from apps.motion.building import ZONES

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS lights (zone TEXT PRIMARY KEY, light INTEGER NOT NULL DEFAULT 0, "
    "since REAL, episodes INTEGER NOT NULL DEFAULT 0, on_seconds REAL NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS alarms (id INTEGER PRIMARY KEY, zone TEXT NOT NULL, at REAL NOT NULL, "
    "sensors TEXT NOT NULL, reason TEXT NOT NULL)",
)
def connect(path: Path | None = None) -> sqlite3.Connection:
    return connection("motion", _setup, path)


def _setup(db: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        db.execute(statement)
    db.executemany("INSERT OR IGNORE INTO lights (zone) VALUES (?)", [(z,) for z in ZONES])


def apply(db: sqlite3.Connection, actions: list[dict[str, Any]]) -> dict[str, Any]:
    """Switch lights for episode starts/ends and record alarms, in one transaction."""
    switched_on, switched_off, alarms = [], [], []
    with transaction(db):
        for a in actions:
            zone = a["zone"]
            if a["action"] == "start":
                db.execute("UPDATE lights SET light = 1, since = ?, episodes = episodes + 1 WHERE zone = ?",
                           (a["at"], zone))
                switched_on.append(zone)
                if a["quiet"]:
                    reason = f"motion in {zone} during quiet hours"
                    alarm_id = db.execute("INSERT INTO alarms (zone, at, sensors, reason) VALUES (?, ?, ?, ?)",
                                          (zone, a["at"], orjson.dumps(a["sensors"]).decode(), reason)).lastrowid
                    alarms.append({"id": alarm_id, "zone": zone, "at": a["at"], "reason": reason})
            else:
                db.execute("UPDATE lights SET light = 0, on_seconds = on_seconds + MAX(0, ? - COALESCE(since, ?)), "
                           "since = ? WHERE zone = ?", (a["at"], a["at"], a["at"], zone))
                switched_off.append(zone)
    return {"switched_on": switched_on, "switched_off": switched_off, "alarms": alarms}


def lights(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    return {row["zone"]: {"light": "on" if row["light"] else "off", "since": row["since"],
                          "episodes": row["episodes"], "on_seconds": round(row["on_seconds"], 3)}
            for row in db.execute("SELECT * FROM lights ORDER BY zone")}


def alarms(db: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = db.execute("SELECT * FROM alarms ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [{**dict(row), "sensors": orjson.loads(row["sensors"])} for row in rows]
