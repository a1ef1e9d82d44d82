"""The five functions of upstream's parking chain, plus the read-only sessions listing.

Route 1 (``POST /parking/events``): detection >> search >> index >> persist >> charging.
Route 2 (``POST /parking/quote``):  detection >> search >> charging.
Each hop returns a JSON object that is the next hop's payload: the object grows as it goes
(plate, then vehicle, then event, session, receipt) and each hop adds its own time to
``timings_ms``, so the client sees where a request's time went.

``plate`` is always the plate as read (or typed); ``plate_key`` (``plates.key``) is what it is
matched by. A read OCR was unsure of carries ``review``: its stay is kept but not charged until an
operator resolves it (``POST /parking/review``).
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
from apps.parking.anpr import NotAnImage, decode, min_confidence, read_plate
from apps.parking.plates import clean, current, key
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
        return _timed({"plate": plate, "plate_key": key(plate), "source": "header", "at": at, "gate": gate},
                      "detection", started)
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
    payload = {"plate": reading.plate, "plate_key": reading.key, "source": "ocr", "ocr": reading.raw,
               "confidence": reading.confidence, "box": reading.box, "at": at, "gate": gate}
    if reading.confidence < min_confidence():
        payload["review"] = (f"OCR was unsure of {reading.plate!r} at gate {gate!r}: confidence "
                             f"{reading.confidence} < {min_confidence()}")
    return _timed(payload, "detection", started)


def search(ctx: Context) -> dict[str, Any]:
    """Look the plate up in the registry, and find its open session, if any (read-only)."""
    started = time.perf_counter()
    payload = ctx.json()
    db = store.connect()
    payload["vehicle"] = store.vehicle(db, payload["plate_key"])
    payload["open_session"] = store.open_session(db, payload["plate_key"])
    return _timed(payload, "search", started)


def index(ctx: Context) -> dict[str, Any]:
    """Record the gate event; the car's first sighting is an entry, the next one its exit."""
    started = time.perf_counter()
    payload = ctx.json()
    payload["event"] = store.record_event(store.connect(), payload["plate_key"], payload["gate"], payload["at"],
                                          payload["plate"])
    return _timed(payload, "index", started)


def persist(ctx: Context) -> dict[str, Any]:
    """Write the parking session: opened on entry, closed (exit time) on exit."""
    started = time.perf_counter()
    payload = ctx.json()
    event = payload["event"]
    # sightings may arrive out of order (two cameras, retries): a stay never ends before it began
    at = max(payload["at"], event["entry_at"]) if event["direction"] == "exit" else payload["at"]
    payload["session"] = store.write_session(store.connect(), payload["plate_key"], event, at, payload["plate"],
                                             payload.get("review"))
    return _timed(payload, "persist", started)


def charging(ctx: Context) -> dict[str, Any]:
    """The fee per the tariff and a receipt. Route 1 records it on exit; route 2 only quotes.

    A stay under review (an unsure read, at entry or now) is neither charged nor quoted."""
    started = time.perf_counter()
    payload = ctx.json()
    plate, vehicle, at = payload["plate"], payload["vehicle"], payload["at"]
    answer: dict[str, Any] = {"plate": plate, "plate_key": payload["plate_key"], "vehicle": vehicle,
                              "gate": payload["gate"]}
    if "confidence" in payload:
        answer["confidence"] = payload["confidence"]
    event = payload.get("event")
    if event is not None:  # route 1: a gate event
        session = payload["session"]
        answer.update(event=event["direction"], session_id=session["id"], state=store.state(session))
        if event["direction"] == "entry":
            answer["message"] = "welcome: session opened"
            ctx.status = 201
        else:
            fee = receipt(session, vehicle, plate)
            if answer["state"] != "review" and store.record_charge(
                    store.connect(), session["id"], fee["total_cents"], orjson.dumps(fee).decode()):
                answer.update(fee=fee, state="charged", message=f"goodbye: {fee['total']} charged")
            else:  # under review, perhaps since the entry's read was written a moment ago
                answer.update(state="review", message="goodbye: the plate read is held for review, nothing charged")
        if answer["state"] == "review":
            answer["review"] = session.get("review") or payload.get("review")
    else:  # route 2: a quote, nothing written
        opened = payload.get("open_session")
        answer["parked"] = opened is not None
        if payload.get("review"):
            answer.update(state="review", review=payload["review"], message="the plate read is held for review")
        elif opened is not None:
            answer.update(session_id=opened["id"], fee=charge(opened["entry_at"], max(at, opened["entry_at"]), vehicle))
        else:
            answer["message"] = "this car has no open parking session"
    answer["timings_ms"] = payload.get("timings_ms", {})
    return _timed(answer, "charging", started)


def receipt(session: dict[str, Any], vehicle: dict[str, Any], plate: str) -> dict[str, Any]:
    """A closed stay's fee, with the plate as the cameras read it (on exit, and on entry)."""
    return {"plate": plate, "entry_plate": session.get("entry_read") or plate,
            **charge(session["entry_at"], session["exit_at"], vehicle)}


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    """A session as answered: the plate as read (``exit_plate``: at the exit), its key and its state."""
    row["state"] = store.state(row)
    row["plate_key"] = row["plate"]
    row["plate"] = row.pop("entry_read") or row["plate_key"]
    row["exit_plate"] = row.pop("exit_read")
    if row.get("receipt"):
        row["receipt"] = orjson.loads(row["receipt"])
    return row


def sessions(ctx: Context) -> dict[str, Any]:
    """``GET /parking/sessions[?plate=AB12CDE][&open=1][&review=1][&limit=50]``: newest first, each with
    its ``state`` (open, review, charged, void); ``review=1``: the stays awaiting an operator."""
    query = ctx.query
    plate = query.get("plate")
    typed = clean(plate) if plate is not None else None
    if plate is not None and typed is None:
        raise HTTPError(400, f"plate {plate!r} is not a plate like {current().example}")
    try:
        limit = min(max(int(query.get("limit", "50")), 1), 1000)
    except ValueError:
        raise HTTPError(400, "limit must be a whole number") from None
    rows = store.sessions(store.connect(), key(typed) if typed else None, query.get("open") in ("1", "true"), limit,
                          review=query.get("review") in ("1", "true"))
    return {"sessions": [_listed(row) for row in rows], "count": len(rows)}


def review(ctx: Context) -> dict[str, Any]:
    """``POST /parking/review?session=ID&plate=AB12CDE``: an operator read the photos; the stay was
    this plate and is charged now. ``&void=1`` instead of ``plate``: closed without a charge."""
    query = ctx.query
    try:
        session_id = int(query.get("session", ""))
    except ValueError:
        raise HTTPError(400, "session must be a session id") from None
    typed = clean(query.get("plate", "")) if "plate" in query else None
    if typed is None and query.get("void") not in ("1", "true"):
        raise HTTPError(400, f"give the plate (like {current().example}) or void=1")
    db = store.connect()
    row = store.resolve(db, session_id, key(typed) if typed else None, typed)
    if row is None:
        raise HTTPError(409, f"session {session_id} is not a closed stay awaiting review")
    if typed is not None:
        fee = receipt(row, store.vehicle(db, row["plate"]), typed)
        store.record_charge(db, session_id, fee["total_cents"], orjson.dumps(fee).decode())
        row = {**row, "fee_cents": fee["total_cents"], "receipt": orjson.dumps(fee).decode()}
    return _listed(row)
