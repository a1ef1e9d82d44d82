"""The five functions of upstream's parking chain, plus the read-only sessions listing.

Route 1 (``POST /parking/events``): detection >> search >> index >> persist >> charging.
Route 2 (``POST /parking/quote``):  detection >> search >> charging.
Each hop returns a JSON object that is the next hop's payload: the object grows as it goes
(plate, then vehicle, then event, session, receipt) and each hop adds its own time to
``timings_ms``, so the client sees where a request's time went.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from typing import Any

import orjson

from apps.media import images
from apps.parking import store
from apps.parking.anpr import NotAnImage, decode, read_plate
from apps.parking.plates import clean, current
from apps.parking.tariff import charge
from spright import Context, HTTPError

GATE = "main"
OCR_PARALLEL = max(1, len(os.sched_getaffinity(0)))
_ocr_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def ocr_slots() -> asyncio.Semaphore:
    """tesseract and OpenCV are CPU-bound: they run in threads, but no more at once than there are
    cores, so a burst of 164 photos queues here instead of thrashing the machine (one per loop:
    a semaphore belongs to the loop it first waited on)."""
    loop = asyncio.get_running_loop()
    return _ocr_slots.setdefault(loop, asyncio.Semaphore(OCR_PARALLEL))


def capture_time(ctx: Context) -> float:
    """When the photo was taken: ``?at=`` or ``X-Captured-At`` (epoch seconds or ISO 8601), else now.

    Cameras know when they saw the car; replaying a trace needs the recorded time, not ours.
    """
    value = ctx.query.get("at") or ctx.headers.get("x-captured-at")
    if not value:
        return time.time()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise HTTPError(400, f"capture time {value!r} is neither epoch seconds nor ISO 8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _timed(payload: dict[str, Any], name: str, started: float) -> dict[str, Any]:
    payload.setdefault("timings_ms", {})[name] = round((time.perf_counter() - started) * 1000, 3)
    return payload


async def detection(ctx: Context) -> dict[str, Any]:
    """Photo in, plate out: OpenCV localisation + tesseract OCR (422 when no plate can be read).

    ``X-Plate`` lets a gate that already knows the plate (an RFID tag, a typed-in plate) skip OCR.
    """
    started = time.perf_counter()
    at, gate = capture_time(ctx), ctx.query.get("gate", GATE)
    typed = ctx.headers.get("x-plate")
    if typed is not None:
        plate = clean(typed)
        if plate is None:
            raise HTTPError(400, f"X-Plate {typed!r} is not a plate like {current().example}")
        return _timed({"plate": plate, "source": "header", "at": at, "gate": gate}, "detection", started)
    (photo,) = images(ctx, 1)
    async with ocr_slots():
        try:
            reading = await asyncio.to_thread(lambda: read_plate(decode(photo)))
        except NotAnImage as exc:
            raise HTTPError(415, str(exc)) from None
    if reading.plate is None:
        seen = f" (OCR read {reading.raw!r}, which is not a {current().name} plate)" if reading.raw else ""
        raise HTTPError(422, f"no readable licence plate in the image{seen}: "
                             f"expected a plate like {current().example}, facing the camera")
    return _timed({"plate": reading.plate, "source": "ocr", "ocr": reading.raw, "box": reading.box,
                   "at": at, "gate": gate}, "detection", started)


def search(ctx: Context) -> dict[str, Any]:
    """Look the plate up in the registry, and find its open session, if any (read-only)."""
    started = time.perf_counter()
    payload = ctx.json()
    db = store.connect()
    payload["vehicle"] = store.vehicle(db, payload["plate"])
    payload["open_session"] = store.open_session(db, payload["plate"])
    return _timed(payload, "search", started)


def index(ctx: Context) -> dict[str, Any]:
    """Record the gate event; the car's first sighting is an entry, the next one its exit."""
    started = time.perf_counter()
    payload = ctx.json()
    payload["event"] = store.record_event(store.connect(), payload["plate"], payload["gate"], payload["at"])
    return _timed(payload, "index", started)


def persist(ctx: Context) -> dict[str, Any]:
    """Write the parking session: opened on entry, closed (exit time) on exit."""
    started = time.perf_counter()
    payload = ctx.json()
    event = payload["event"]
    # sightings may arrive out of order (two cameras, retries): a stay never ends before it began
    at = max(payload["at"], event["entry_at"]) if event["direction"] == "exit" else payload["at"]
    payload["session"] = store.write_session(store.connect(), payload["plate"], event, at)
    return _timed(payload, "persist", started)


def charging(ctx: Context) -> dict[str, Any]:
    """The fee per the tariff and a receipt. Route 1 records it on exit; route 2 only quotes."""
    started = time.perf_counter()
    payload = ctx.json()
    plate, vehicle, at = payload["plate"], payload["vehicle"], payload["at"]
    answer: dict[str, Any] = {"plate": plate, "vehicle": vehicle, "gate": payload["gate"]}
    event = payload.get("event")
    if event is not None:  # route 1: a gate event
        session = payload["session"]
        answer.update(event=event["direction"], session_id=session["id"])
        if event["direction"] == "entry":
            answer["message"] = "welcome: session opened"
            ctx.status = 201
        else:
            fee = charge(session["entry_at"], session["exit_at"], vehicle)
            answer.update(fee=fee, message=f"goodbye: {fee['total']} charged")
            store.record_charge(store.connect(), session["id"], fee["total_cents"], orjson.dumps(fee).decode())
    else:  # route 2: a quote, nothing written
        opened = payload.get("open_session")
        answer["parked"] = opened is not None
        if opened is not None:
            answer.update(session_id=opened["id"], fee=charge(opened["entry_at"], max(at, opened["entry_at"]), vehicle))
        else:
            answer["message"] = "this car has no open parking session"
    answer["timings_ms"] = payload.get("timings_ms", {})
    return _timed(answer, "charging", started)


def sessions(ctx: Context) -> dict[str, Any]:
    """``GET /parking/sessions[?plate=AB12CDE][&open=1][&limit=50]``: newest first."""
    query = ctx.query
    plate = query.get("plate")
    if plate is not None and clean(plate) is None:
        raise HTTPError(400, f"plate {plate!r} is not a plate like {current().example}")
    try:
        limit = min(max(int(query.get("limit", "50")), 1), 1000)
    except ValueError:
        raise HTTPError(400, "limit must be a whole number") from None
    rows = store.sessions(store.connect(), clean(plate) if plate else None, query.get("open") in ("1", "true"), limit)
    for row in rows:
        if row.get("receipt"):
            row["receipt"] = orjson.loads(row["receipt"])
    return {"sessions": rows, "count": len(rows)}
