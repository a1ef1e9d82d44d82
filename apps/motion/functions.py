"""The motion app's functions: ``sensor`` >> ``actuator`` for events, ``frames`` for cameras.

``sensor`` turns raw detections into episode starts/ends (apps.motion.episodes) and passes
them on; its return value is the actuator's payload. ``actuator`` switches zone lights and
records alarms in SQLite, and answers the client. Both are plain ``def`` handlers: their work
is microseconds, and a worker that does nothing between events costs nothing (no polling).
"""

from __future__ import annotations

import asyncio
from typing import Any

from apps.datadir import database_path
from apps.media import NotAnImage, decode, images
from apps.motion import store
from apps.motion.building import SENSOR_ZONE
from apps.motion.episodes import Detection, Tracker
from apps.motion.frames import motion_boxes
from spright import Context, HTTPError

MAX_BATCH = 10_000
_trackers: dict[str, Tracker] = {}


def tracker() -> Tracker:
    """The sensor state of this process, one per database (a fresh database: a fresh building)."""
    return _trackers.setdefault(str(database_path("motion")), Tracker())


def detections(payload: Any) -> list[Detection]:
    """Validate one event or a list of them: ``{"sensor": 420, "start": 1154697071.0, "end": ...}``."""
    events = payload if isinstance(payload, list) else [payload]
    if not events or len(events) > MAX_BATCH:
        raise HTTPError(400, f"send 1 to {MAX_BATCH} events")
    out = []
    for n, event in enumerate(events):
        if not isinstance(event, dict):
            raise HTTPError(400, f"event {n}: expected an object with sensor, start, end")
        sensor, start, end = event.get("sensor"), event.get("start"), event.get("end", event.get("start"))
        if isinstance(sensor, str) and sensor.isdigit():
            sensor = int(sensor)
        if not isinstance(sensor, int) or isinstance(sensor, bool):
            raise HTTPError(400, f"event {n}: sensor must be a sensor id (an integer)")
        if sensor not in SENSOR_ZONE:
            raise HTTPError(404, f"event {n}: unknown sensor {sensor}")
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (start, end)):
            raise HTTPError(400, f"event {n}: start and end must be epoch seconds")
        if end < start:
            raise HTTPError(400, f"event {n}: end is before start")
        out.append(Detection(sensor, float(start), float(end)))
    return out


def sensor(ctx: Context) -> dict[str, Any]:
    """Events in, episode actions out; ``GET /motion/zones`` passes the open episodes instead."""
    state = tracker()
    if ctx.method == "GET":
        return {"zones": state.zones(), "clock": state.clock}
    batch = detections(ctx.json())
    actions = state.ingest(batch)
    return {"accepted": len(batch), "actions": actions, "clock": state.clock, "late": state.late}


def actuator(ctx: Context) -> dict[str, Any]:
    """Act on episodes (lights on/off, alarms during quiet hours); answers the HTTP request."""
    db = store.connect()
    if ctx.path == "/motion/alarms":
        try:
            limit = min(max(int(ctx.query.get("limit", "100")), 1), 1000)
        except ValueError:
            raise HTTPError(400, "limit must be a whole number") from None
        found = store.alarms(db, limit)
        return {"alarms": found, "count": len(found)}
    payload = ctx.json()
    if "zones" in payload:  # GET /motion/zones: the sensor's episodes next to our lights
        lights = store.lights(db)
        return {"clock": payload["clock"],
                "zones": {name: {**zone, **lights[name]} for name, zone in payload["zones"].items()}}
    done = store.apply(db, payload["actions"])
    return {"accepted": payload["accepted"], "late": payload["late"], "clock": payload["clock"],
            "episodes_started": [a["zone"] for a in payload["actions"] if a["action"] == "start"],
            "episodes_ended": [a["zone"] for a in payload["actions"] if a["action"] == "end"], **done}


async def frames(ctx: Context) -> dict[str, Any]:
    """Two frames (multipart) in, motion boxes out; the OpenCV work runs in a thread."""
    before, after = images(ctx, 2)
    try:
        return await asyncio.to_thread(lambda: motion_boxes(decode(before), decode(after)))
    except NotAnImage as exc:
        raise HTTPError(415, str(exc)) from None
