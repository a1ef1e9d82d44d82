"""Parking detection & charging: plates, tariff, OCR on rendered cars, the chains in process and on a node."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from apps.datadir import forget_connections
from apps.parking import app
from apps.parking.anpr import decode, read_plate
from apps.parking.load import run as run_load
from apps.parking.plates import FORMAT_ENV, FORMATS, clean, fleet, key, normalise
from apps.parking.synth import samples
from apps.parking.tariff import DEFAULT, charge
from spright.host.nodefile import DATA_DIR, runtime_base
from spright.testing import TestClient, run_node

JAN1 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()  # a Monday, midnight UTC
HOUR = 3600.0
VISITOR = {"registered": False, "kind": "visitor", "permit": False}
JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def photos() -> list:
    return samples(6, seed=11)


@pytest.fixture
def db_path(app_database) -> Path:
    return app_database("parking")


# -- plates and tariff ---------------------------------------------------------------------
def test_plate_format_and_ocr_repairs() -> None:
    assert clean("ab12 cde") == "AB12CDE" and clean("AB12 CDI") is None and clean("A812CDE") is None
    assert normalise("AB12CDE") == "AB12CDE"
    assert normalise("A8I2CDE") == "AB12CDE"  # 8 in a letter slot, I in a digit slot
    assert normalise("RC9O5HNK") == "RC95HNK"  # one glyph read as two
    assert normalise("IAB12CDE") == "AB12CDE"  # the rim read as I
    assert normalise("AB12") is None and normalise("") is None
    assert len(set(fleet())) > 290 and all(clean(p) for p in fleet())


def test_a_read_that_fits_only_another_format_is_never_repaired_into_a_plate() -> None:
    uk, us, anything = FORMATS["uk"], FORMATS["us"], FORMATS["any"]
    assert normalise("PYL3554", uk) is None  # was repaired into PY13SSA, another car
    assert normalise("PYL3554", us) == "PYL3554" and normalise("PYL 3S54", us) == "PYL3554"
    assert normalise("AB12CDE", us) is None and clean("ABC 1234", us) == "ABC1234" and clean("AB12 CDE", us) is None
    assert normalise("P-Y-L3554", anything) == "PYL3554" and normalise("A", anything) is None
    assert normalise("OS8", anything) == "OS8" and clean("058", anything) == "058", "a plate stays as read"
    assert key("OS8", anything) == key("058", anything) == "058", "confusable glyphs are one character in the key"
    assert key("OS8", uk) == "OS8"
    for fmt in FORMATS.values():
        assert all(clean(p, fmt) == p for p in fleet(50, fmt=fmt)), fmt.name


def test_tariff_bands_grace_cap_and_discounts() -> None:
    assert charge(JAN1 + 9 * HOUR, JAN1 + 9 * HOUR + 600, VISITOR)["total_cents"] == 0  # within the grace period
    assert charge(JAN1 + 9 * HOUR, JAN1 + 11 * HOUR, VISITOR)["total_cents"] == 600  # 2 h of day rate
    evening = charge(JAN1 + 18 * HOUR, JAN1 + 20 * HOUR, VISITOR)  # 1 h day (300) + 1 h evening (150)
    assert evening["total_cents"] == 450 and evening["total"] == "4.50 GBP"
    overnight = charge(JAN1 + 22 * HOUR, JAN1 + 24 * HOUR + 2 * HOUR, VISITOR)  # 2 h evening + 2 h night
    assert [d["cents"] for d in overnight["days"]] == [300, 200] and overnight["total_cents"] == 500
    three_days = charge(JAN1, JAN1 + 60 * HOUR, VISITOR)  # capped at 20.00 on each full day
    assert [d["capped"] for d in three_days["days"]] == [True, True, True] and three_days["total_cents"] == 6000
    assert charge(JAN1 + 9 * HOUR, JAN1 + 9 * HOUR + 1234, VISITOR)["total_cents"] == 103  # 102.83 rounds up
    permit = charge(JAN1 + 9 * HOUR, JAN1 + 11 * HOUR, {"permit": True, "kind": "car"})
    assert permit["discount_cents"] == 300 and permit["total_cents"] == 300
    assert charge(JAN1 + 9 * HOUR, JAN1 + 11 * HOUR, {"kind": "ev"})["total_cents"] == 480
    with pytest.raises(ValueError):
        charge(JAN1 + 1, JAN1, VISITOR)
    assert DEFAULT.daily_cap_cents == 2000


# -- recognition -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ocr
@pytest.mark.parametrize(("name", "at_least"), [("uk", 19), ("us", 19), ("any", 15)])
def test_generated_plates_are_read_exactly(name: str, at_least: int) -> None:
    """20 rendered cars (position, scale, tilt, lighting, noise, blur vary) with plates of each
    format. ``any`` has no layout to check a read against, so it reads fewer exactly."""
    fmt = FORMATS[name]
    batch = samples(20, seed=3, fmt=fmt)
    reads = [read_plate(decode(s.jpeg), fmt).key for s in batch]  # any: matched by key (O is 0, B is 8...)
    right = sum(read == key(s.plate, fmt) for read, s in zip(reads, batch, strict=True))
    assert right >= at_least, [(s.plate, read) for read, s in zip(reads, batch, strict=True) if read != s.plate]


@pytest.mark.ocr
async def test_a_plate_of_another_format_is_a_422_naming_what_was_read(db_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    us_cars = samples(3, seed=5, fmt=FORMATS["us"])
    async with TestClient(app) as client:  # the node reads uk plates (the default)
        for car in us_cars:
            r = await client.post("/parking/quote", body=car.jpeg, headers=JPEG)
            assert r.status == 422 and "which is not a uk plate" in r.json()["error"], r.body
        monkeypatch.setenv(FORMAT_ENV, "us")
        r = await client.post("/parking/quote", body=us_cars[0].jpeg, headers=JPEG)
        assert r.status == 200 and r.json()["plate"] == us_cars[0].plate


@pytest.mark.ocr
def test_a_photo_without_a_plate_is_unreadable() -> None:
    assert read_plate(decode(_png(320, 200))).plate is None


def _png(w: int, h: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (w, h), (128, 140, 150)).save(out, "PNG")
    return out.getvalue()


# -- in process --------------------------------------------------------------------------------
@pytest.mark.ocr
async def test_entry_quote_exit_and_rows_persisted(db_path: Path, photos: list) -> None:
    car = photos[0]
    async with TestClient(app) as client:
        entry = await client.post(f"/parking/events?at={JAN1 + 9 * HOUR}&gate=north", body=car.jpeg, headers=JPEG)
        assert entry.status == 201, entry.body
        assert entry.json()["event"] == "entry" and entry.json()["plate"] == car.plate
        quote = await client.post(f"/parking/quote?at={JAN1 + 11 * HOUR}", body=car.jpeg, headers=JPEG)
        assert quote.status == 200 and quote.json()["parked"] is True
        vehicle = quote.json()["vehicle"]
        expected = charge(JAN1 + 9 * HOUR, JAN1 + 11 * HOUR, vehicle)["total_cents"]
        assert quote.json()["fee"]["total_cents"] == expected
        leave = await client.post("/parking/events", body=car.jpeg,
                                  headers={**JPEG, "x-captured-at": dt.datetime.fromtimestamp(
                                      JAN1 + 13.5 * HOUR, dt.UTC).isoformat()})
        assert leave.status == 200 and leave.json()["event"] == "exit"
        assert leave.json()["fee"]["total_cents"] == charge(JAN1 + 9 * HOUR, JAN1 + 13.5 * HOUR, vehicle)["total_cents"]
        timings = leave.json()["timings_ms"]
        assert list(timings) == ["detection", "search", "index", "persist", "charging"]
        listed = (await client.get(f"/parking/sessions?plate={car.plate}")).json()
        assert listed["count"] == 1 and listed["sessions"][0]["receipt"]["total_cents"] == leave.json()["fee"][
            "total_cents"]
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT direction, gate FROM events ORDER BY id").fetchall() == [("entry", "north"),
                                                                                            ("exit", "main")]
        assert db.execute("SELECT COUNT(*) FROM presence").fetchone()[0] == 0
        row = db.execute("SELECT entry_at, exit_at, fee_cents FROM sessions").fetchone()
        assert row == (JAN1 + 9 * HOUR, JAN1 + 13.5 * HOUR, leave.json()["fee"]["total_cents"])


async def test_quote_writes_nothing_and_registry_lookup(db_path: Path) -> None:
    registered = fleet()[0]
    async with TestClient(app) as client:
        answer = await client.post("/parking/quote", body=b"", headers={"x-plate": registered})
        assert answer.status == 200 and answer.json()["parked"] is False
        assert answer.json()["vehicle"]["registered"] is True
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM sessions)").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM vehicles").fetchone()[0] == len(set(fleet()))


@pytest.mark.ocr
async def test_bad_input_is_a_clear_4xx(db_path: Path, photos: list) -> None:
    async with TestClient(app) as client:
        not_image = await client.post("/parking/quote", body=b"hello, I am text",
                                      headers={"content-type": "text/plain"})
        assert not_image.status == 415 and "JPEG or PNG" in not_image.json()["error"]
        corrupt = await client.post("/parking/quote", body=b"\xff\xd8\xff" + b"\x00" * 100, headers=JPEG)
        assert corrupt.status == 415 and "not an image" in corrupt.json()["error"]
        assert (await client.post("/parking/quote")).status == 400
        unreadable = await client.post("/parking/events", body=_png(320, 200), headers={"content-type": "image/png"})
        assert unreadable.status == 422 and "no readable licence plate" in unreadable.json()["error"]
        assert (await client.post("/parking/quote", headers={"x-plate": "nope"})).status == 400
        assert (await client.post("/parking/quote?at=yesterday", body=photos[0].jpeg, headers=JPEG)).status == 400
        assert (await client.get("/parking/sessions?limit=x")).status == 400


@pytest.mark.ocr
async def test_multipart_upload_and_concurrent_cars(db_path: Path, photos: list) -> None:
    boundary = "spright-boundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"photo\"; filename=\"car.jpg\"\r\nContent-Type: image/jpeg"
            f"\r\n\r\n").encode() + photos[1].jpeg + f"\r\n--{boundary}--\r\n".encode()
    async with TestClient(app) as client:
        response = await client.post("/parking/quote", body=form,
                                     headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status == 200 and response.json()["plate"] == photos[1].plate
        plates = fleet()[:12]
        results = await asyncio.gather(*(client.post(f"/parking/events?at={JAN1 + n}", headers={"x-plate": p})
                                         for n, p in enumerate(plates * 2)))
        assert sorted(r.json()["event"] for r in results) == ["entry"] * 12 + ["exit"] * 12
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions WHERE exit_at IS NOT NULL").fetchone()[0] == 12
    forget_connections()


# -- a real node -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parking_node(transport: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A node and the SQLite file its workers share (in the node's data directory, theirs)."""
    with run_node("apps.parking:app", transport=transport) as (port, process):
        yield f"http://127.0.0.1:{port}", runtime_base() / str(process.pid) / DATA_DIR / "parking.sqlite3"


@pytest.fixture(scope="module")
def parking_url(parking_node: tuple[str, Path]) -> str:
    return parking_node[0]


@pytest.mark.node
async def test_concurrent_cars_on_a_node_are_each_recorded_exactly_once(parking_node: tuple[str, Path]) -> None:
    """Many cars at once over many connections (plates typed in: no OCR), so that index, persist
    and charging (three processes) write the one SQLite file concurrently. 64 cars each enter at
    09:00 and leave at 11:00 (a visitor's 2 h at 3.00/h: 600); 32 more are seen twice at the same
    moment, both sightings in flight together (one must be the entry, the other the exit).
    Catches: "database is locked" 500s, an event, session or charge lost or doubled, a car's
    exit closing another car's session, a car entered twice."""
    url, db_path = parking_node
    staying = [f"ZX{n:02d}VST" for n in range(64)]
    doubled = [f"ZY{n:02d}VST" for n in range(32)]
    assert not {*staying, *doubled} & set(fleet())  # unregistered: visitors, full rate, no discount
    nine, eleven = JAN1 + 9 * HOUR, JAN1 + 11 * HOUR
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def sighting(plate: str, at: float) -> tuple[int, dict]:
            async with http.post(f"{url}/parking/events?at={at}", headers={"x-plate": plate}) as r:
                return r.status, await r.json()

        async def stay(plate: str) -> list[tuple[int, dict]]:
            return [await sighting(plate, nine), await sighting(plate, eleven)]

        async def seen_twice(plate: str) -> list[tuple[int, dict]]:
            return list(await asyncio.gather(sighting(plate, nine), sighting(plate, nine)))

        results = await asyncio.gather(*map(stay, staying), *map(seen_twice, doubled))
    sessions: dict[str, int] = {}
    for plate, answers in zip([*staying, *doubled], results, strict=True):
        assert sorted(status for status, _ in answers) == [200, 201], (plate, answers)
        entry, leave = sorted(answers, key=lambda answer: answer[0], reverse=True)  # 201 before 200
        assert (entry[0], entry[1]["event"], entry[1]["plate"]) == (201, "entry", plate), entry
        assert (leave[0], leave[1]["event"], leave[1]["plate"]) == (200, "exit", plate), leave
        assert entry[1]["session_id"] == leave[1]["session_id"]
        assert leave[1]["fee"]["total_cents"] == (600 if plate in staying else 0)  # same moment: grace
        sessions[plate] = leave[1]["session_id"]
    assert len(set(sessions.values())) == len(sessions), "every car a session of its own"

    with sqlite3.connect(db_path) as db:
        events = db.execute("SELECT plate, direction, COUNT(*) FROM events WHERE plate LIKE 'Z_%VST' "
                            "GROUP BY plate, direction").fetchall()
        assert sorted(events) == sorted((plate, d, 1) for plate in sessions for d in ("entry", "exit"))
        rows = db.execute(
            "SELECT s.id, s.plate, s.entry_at, s.exit_at, s.fee_cents, s.receipt, en.plate, en.direction, "
            "ex.plate, ex.direction FROM sessions s JOIN events en ON en.id = s.entry_event "
            "JOIN events ex ON ex.id = s.exit_event WHERE s.plate LIKE 'Z_%VST'").fetchall()
        assert len(rows) == len(sessions), "one session per car, each closed by an exit event"
        for id_, plate, entry_at, exit_at, fee, receipt, entry_plate, entry_kind, exit_plate, exit_kind in rows:
            assert (id_, entry_plate, entry_kind, exit_plate, exit_kind) == (sessions[plate], plate, "entry",
                                                                             plate, "exit")
            expected_fee = 600 if plate in staying else 0
            assert (entry_at, exit_at, fee) == (nine, eleven if plate in staying else nine, expected_fee)
            assert json.loads(receipt)["total_cents"] == expected_fee, "the charge recorded is the one billed"
        assert db.execute("SELECT COUNT(*) FROM presence WHERE plate LIKE 'Z_%VST'").fetchone()[0] == 0


@pytest.mark.node
@pytest.mark.ocr
async def test_chains_on_node(parking_url: str, photos: list) -> None:
    car = photos[2]
    async with aiohttp.ClientSession() as http:
        async def post(path: str, body: bytes, **headers: str) -> tuple[int, dict]:
            async with http.post(parking_url + path, data=body, headers={**JPEG, **headers}) as r:
                return r.status, await r.json()

        assert (await post(f"/parking/events?at={JAN1 + 8 * HOUR}", car.jpeg))[0] == 201
        status, quote = await post(f"/parking/quote?at={JAN1 + 10 * HOUR}", car.jpeg)
        assert status == 200 and quote["plate"] == car.plate and quote["fee"]["total_cents"] == charge(
            JAN1 + 8 * HOUR, JAN1 + 10 * HOUR, quote["vehicle"])["total_cents"]
        status, leave = await post(f"/parking/events?at={JAN1 + 12 * HOUR}", car.jpeg)
        assert status == 200 and leave["event"] == "exit"
        assert (await post("/parking/quote", b"text", **{"content-type": "text/plain"}))[0] == 415
        status, error = await post("/parking/events", _png(300, 200), **{"content-type": "image/png"})
        assert status == 422 and "licence plate" in error["error"]
        async with http.get(f"{parking_url}/parking/sessions?plate={car.plate}") as r:
            assert (await r.json())["sessions"][0]["fee_cents"] == leave["fee"]["total_cents"]


@pytest.mark.node
@pytest.mark.ocr
async def test_burst_load_profile_on_node(parking_url: str) -> None:
    result = await run_load(parking_url, burst=12, every=0.5, bursts=2, photos=4, seed=2)  # photos all readable
    assert result["requests"] == 24 and set(result["statuses"]) <= {"200", "201"}, result["statuses"]
    assert result["plates"]["wrong"] == 0 and "detection" in result["functions"]


def test_database_path_is_outside_the_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from apps.datadir import database_path

    for name in ("SPRIGHT_PARKING_DB", "SPRIGHT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert repo not in database_path("parking").resolve().parents
    monkeypatch.setenv("SPRIGHT_DATA_DIR", os.fspath(tmp_path / "data"))
    assert database_path("parking") == tmp_path / "data" / "parking.sqlite3"
