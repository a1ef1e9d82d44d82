"""Parking answers and receipts show the plate as the camera read it; the ``any`` format's merged
form (B and 8 one character...) is only what plates are matched by; a read OCR was unsure of (its
per-character confidences) puts the stay under review instead of charging it. Real OCR throughout:
the photos are rendered by apps.parking.synth and read by tesseract."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from apps.parking import app
from apps.parking.anpr import CONFIDENCE_ENV, MIN_CONFIDENCE, Line, vote
from apps.parking.plates import FORMAT_ENV, FORMATS
from apps.parking.synth import render_car
from apps.parking.tariff import charge
from spright.testing import TestClient

JAN1 = 1704067200.0  # 2024-01-01 00:00 UTC
HOUR = 3600.0
JPEG = {"content-type": "image/jpeg"}
ANY = FORMATS["any"]
VISITOR_2H = charge(JAN1 + 9 * HOUR, JAN1 + 11 * HOUR, {"kind": "visitor"})["total_cents"]  # 600


def photo(plate: str, seed: int) -> bytes:
    """A rendered car showing ``plate`` (``#``: a smudged glyph, which tesseract reads unsure)."""
    return render_car(plate, random.Random(seed), fmt=ANY).jpeg


@pytest.fixture
def any_format(app_database, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh database, the node reading ``any`` plates, the default review threshold."""
    monkeypatch.setenv(FORMAT_ENV, "any")
    monkeypatch.delenv(CONFIDENCE_ENV, raising=False)
    return app_database("parking")


def test_reads_vote_by_key_and_the_winner_is_shown_as_read() -> None:
    reads = [Line("RBW4009", 91.0), Line("R8W4009", 62.0), Line("RBW4009", 70.0), Line("XX", 99.0)]
    assert vote(reads, ANY) == ("RBW4009", "R8W4009", 91.0)
    assert vote([Line("AB12CDE", 80.0), Line("A812CDE", 95.0)], FORMATS["uk"]) == ("AB12CDE", "AB12CDE", 95.0)


@pytest.mark.ocr
async def test_an_any_plate_with_b_is_answered_as_read_and_charged_as_one_vehicle(any_format: Path) -> None:
    async with TestClient(app) as client:
        entry = await client.post(f"/parking/events?at={JAN1 + 9 * HOUR}", body=photo("RBW4009", 0), headers=JPEG)
        assert entry.status == 201, entry.body
        assert (entry.json()["plate"], entry.json()["plate_key"]) == ("RBW4009", "R8W4009"), entry.json()
        assert entry.json()["confidence"] >= MIN_CONFIDENCE and entry.json()["state"] == "open"
        quote = await client.post(f"/parking/quote?at={JAN1 + 10 * HOUR}", body=photo("RBW4009", 1), headers=JPEG)
        assert quote.json()["plate"] == "RBW4009" and quote.json()["parked"] is True
        leave = await client.post(f"/parking/events?at={JAN1 + 11 * HOUR}", body=photo("RBW4009", 2), headers=JPEG)
        answer = leave.json()
        assert leave.status == 200 and answer["event"] == "exit" and answer["state"] == "charged", answer
        assert answer["session_id"] == entry.json()["session_id"] and answer["plate"] == "RBW4009"
        assert answer["fee"]["total_cents"] == VISITOR_2H
        assert (answer["fee"]["plate"], answer["fee"]["entry_plate"]) == ("RBW4009", "RBW4009"), "the receipt"
        for query in ("RBW4009", "R8W4009", "rbw 4009"):  # listed by key, shown as read
            listed = (await client.get(f"/parking/sessions?plate={query}")).json()["sessions"]
            assert [(s["plate"], s["exit_plate"], s["plate_key"], s["state"], s["receipt"]["plate"])
                    for s in listed] == [("RBW4009", "RBW4009", "R8W4009", "charged", "RBW4009")], query
    with sqlite3.connect(any_format) as db:
        assert db.execute("SELECT plate, read FROM events ORDER BY id").fetchall() == [("R8W4009", "RBW4009")] * 2


@pytest.mark.ocr
async def test_an_exit_read_with_8_closes_the_stay_an_entry_read_with_b_opened(any_format: Path) -> None:
    async with TestClient(app) as client:
        entry = await client.post(f"/parking/events?at={JAN1 + 9 * HOUR}", body=photo("RBW4009", 0), headers=JPEG)
        assert entry.status == 201 and entry.json()["plate"] == "RBW4009", entry.body
        leave = await client.post(f"/parking/events?at={JAN1 + 11 * HOUR}", body=photo("R8W4009", 3), headers=JPEG)
        answer = leave.json()
        assert answer["event"] == "exit" and answer["session_id"] == entry.json()["session_id"], answer
        assert answer["plate"] == "R8W4009" and answer["fee"]["total_cents"] == VISITOR_2H
        assert (answer["fee"]["plate"], answer["fee"]["entry_plate"]) == ("R8W4009", "RBW4009")
        listed = (await client.get("/parking/sessions")).json()
        assert listed["count"] == 1 and listed["sessions"][0]["state"] == "charged"


@pytest.mark.ocr
async def test_an_unsure_read_goes_to_review_and_is_not_charged(any_format: Path) -> None:
    smudged = [photo("RBW4#09", seed) for seed in (0, 1)]  # read RBW4409, the 4 at confidence < 50
    async with TestClient(app) as client:
        entry = await client.post(f"/parking/events?at={JAN1 + 9 * HOUR}", body=smudged[0], headers=JPEG)
        assert entry.status == 201 and entry.json()["state"] == "review", entry.json()
        assert entry.json()["confidence"] < MIN_CONFIDENCE and "unsure" in entry.json()["review"]
        quote = await client.post(f"/parking/quote?at={JAN1 + 10 * HOUR}", body=smudged[1], headers=JPEG)
        assert quote.json()["state"] == "review" and "fee" not in quote.json(), quote.json()
        leave = await client.post(f"/parking/events?at={JAN1 + 11 * HOUR}", body=smudged[1], headers=JPEG)
        answer = leave.json()
        assert leave.status == 200 and answer["event"] == "exit" and answer["state"] == "review", answer
        assert answer["session_id"] == entry.json()["session_id"] and "fee" not in answer
        listed = (await client.get("/parking/sessions?review=1")).json()["sessions"]
        assert [(s["id"], s["state"], s["fee_cents"]) for s in listed] == [(answer["session_id"], "review", None)]
        with sqlite3.connect(any_format) as db:
            assert db.execute("SELECT fee_cents, receipt FROM sessions").fetchall() == [(None, None)]

        # an operator looked: it was RBW4009; the stay is charged to it now
        resolved = await client.post(f"/parking/review?session={answer['session_id']}&plate=RBW4009")
        assert resolved.status == 200 and resolved.json()["state"] == "charged", resolved.json()
        assert resolved.json()["receipt"]["plate"] == "RBW4009"
        assert resolved.json()["receipt"]["total_cents"] == VISITOR_2H
        assert (await client.get("/parking/sessions?review=1")).json()["count"] == 0
        again = await client.post(f"/parking/review?session={answer['session_id']}&void=1")
        assert again.status == 409


@pytest.mark.ocr
async def test_the_review_threshold_is_configured(any_format: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with TestClient(app) as client:
        monkeypatch.setenv(CONFIDENCE_ENV, "0")  # never review: the smudged read is charged (to RBW4409)
        await client.post(f"/parking/events?at={JAN1 + 9 * HOUR}", body=photo("RBW4#09", 0), headers=JPEG)
        leave = await client.post(f"/parking/events?at={JAN1 + 11 * HOUR}", body=photo("RBW4#09", 1), headers=JPEG)
        assert leave.json()["state"] == "charged" and leave.json()["plate"] == "RBW4409", leave.json()
        monkeypatch.setenv(CONFIDENCE_ENV, "100")  # review everything: a clean read too
        clean = await client.post(f"/parking/events?at={JAN1 + 9 * HOUR}", body=photo("RBW4009", 0), headers=JPEG)
        assert clean.json()["plate"] == "RBW4009" and clean.json()["state"] == "review", clean.json()


def test_a_database_of_the_first_schema_gains_the_new_columns(tmp_path: Path) -> None:
    from apps.datadir import forget_connections
    from apps.parking import store

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # as an earlier release left it in --data-dir
        db.executescript("CREATE TABLE sessions (id INTEGER PRIMARY KEY, plate TEXT NOT NULL, entry_event INTEGER "
                         "NOT NULL UNIQUE, exit_event INTEGER UNIQUE, entry_at REAL NOT NULL, exit_at REAL, "
                         "fee_cents INTEGER, receipt TEXT); "
                         "INSERT INTO sessions VALUES (1, 'AB12CDE', 1, 2, 0, 60, 0, '{}')")
    db = store.connect(path)
    assert [(row["plate"], store.state(dict(row))) for row in db.execute("SELECT * FROM sessions")] == [
        ("AB12CDE", "charged")]
    columns = {row["name"] for row in db.execute("PRAGMA table_info(sessions)")}
    assert {"entry_read", "exit_read", "review", "resolved"} <= columns
    forget_connections()
