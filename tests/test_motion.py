"""Motion detection: episodes from a known trace, lights and alarms, frames, the replayer on a node."""

from __future__ import annotations

import io
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from apps.motion import app
from apps.motion.building import SENSOR_ZONE, ZONES
from apps.motion.episodes import MERGE_GAP, Detection, Tracker
from apps.motion.frames import motion_boxes
from apps.motion.replay import replay
from apps.motion.trace import format_merl, generate, load, parse
from spright.testing import TestClient, run_node

DAY = 1154692800.0  # 2006-08-04 12:00 UTC, working hours
NIGHT = DAY + 14 * 3600  # 02:00 UTC the next day: quiet hours everywhere


def events(detections: list[Detection]) -> list[dict]:
    return [{"sensor": d.sensor, "start": d.start, "end": d.end} for d in detections]


@pytest.fixture
def db_path(app_database) -> Path:
    return app_database("motion")


# -- episodes and traces ----------------------------------------------------------------------
def test_detections_merge_into_episodes_and_quiet_hours_flag() -> None:
    north = ZONES["8-north"].sensors
    tracker = Tracker()
    actions = tracker.ingest([Detection(north[0], DAY, DAY + 2), Detection(north[1], DAY + 3, DAY + 4),
                              Detection(north[2], DAY + 30, DAY + 31)])
    assert [(a["action"], a["zone"]) for a in actions] == [("start", "8-north")]
    assert tracker.open["8-north"].detections == 3 and tracker.open["8-north"].sensors == set(north[:3])
    # a detection elsewhere, well after the gap: the north episode ends (trace clock, not wall clock)
    later = DAY + 31 + MERGE_GAP + 5
    actions = tracker.ingest([Detection(ZONES["7-lobby"].sensors[0], later, later + 1)])
    assert [(a["action"], a["zone"]) for a in actions] == [("end", "8-north"), ("start", "7-lobby")]
    assert actions[0]["end"] == DAY + 31 and not actions[1]["quiet"]
    # a late detection (before the open episode) is counted, not replayed into the past
    tracker.ingest([Detection(ZONES["7-lobby"].sensors[1], DAY, DAY + 1)])
    assert tracker.late == 1
    night = Tracker().ingest([Detection(north[0], NIGHT, NIGHT + 1)])
    assert night[0]["quiet"] is True


def test_trace_format_round_trip_and_shape() -> None:
    trace = generate(minutes=60, seed=4)
    assert parse(format_merl(trace)) == trace
    per_minute = len(trace) / 60
    assert 3 < per_minute < 60, per_minute  # sparse: a few detections a minute over 80 sensors
    assert len({d.sensor for d in trace}) > 30 and all(d.sensor in SENSOR_ZONE for d in trace)
    gaps = sorted(b.start - a.start for a, b in itertools.pairwise(trace))
    assert gaps[len(gaps) // 2] < 3 and gaps[-1] > 60  # bursty: mostly close together, long silences
    with pytest.raises(ValueError, match="line 2"):
        parse("# header\n420 12 x\n")
    sample = load()
    assert 100 < len(sample) < 1000


def test_frame_differencing_finds_the_moved_object() -> None:
    rng = np.random.default_rng(1)
    before = rng.integers(90, 110, (240, 320, 3), dtype=np.uint8)
    after = before.copy()
    after[100:140, 200:260] = 250  # something bright appeared
    after = np.clip(after.astype(int) + 20, 0, 255).astype(np.uint8)  # and the lights got brighter
    found = motion_boxes(before, after)
    assert found["motion"] and len(found["boxes"]) == 1
    box = found["boxes"][0]
    assert abs(box["x"] - 200) < 12 and abs(box["y"] - 100) < 12 and abs(box["w"] - 60) < 24
    assert motion_boxes(before, before)["motion"] is False


# -- in process ----------------------------------------------------------------------------------
async def test_known_trace_gives_known_state(db_path: Path) -> None:
    sample = load()
    expected = Tracker()
    actions = expected.ingest(sample[:120]) + expected.ingest(sample[120:])
    starts = [a for a in actions if a["action"] == "start"]
    async with TestClient(app) as client:
        for part in (sample[:120], sample[120:]):
            response = await client.post("/motion/events", json=events(part))
            assert response.status == 200, response.body
        zones = (await client.get("/motion/zones")).json()["zones"]
        alarms = (await client.get("/motion/alarms")).json()
    for name in ZONES:
        assert zones[name]["episodes"] == sum(a["zone"] == name for a in starts)
        assert zones[name]["light"] == ("on" if name in expected.open else "off")
    assert alarms["count"] == sum(a["quiet"] for a in starts) > 0  # the sample crosses 20:00 UTC
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT SUM(episodes) FROM lights").fetchone()[0] == len(starts)


async def test_bad_events_are_clear_4xx(db_path: Path) -> None:
    async with TestClient(app) as client:
        unknown = await client.post("/motion/events", json={"sensor": 1234, "start": DAY, "end": DAY + 1})
        assert unknown.status == 404 and "unknown sensor 1234" in unknown.json()["error"]
        assert (await client.post("/motion/events", body=b"{nope")).status == 400
        assert (await client.post("/motion/events", json={"sensor": 700, "start": "x"})).status == 400
        assert (await client.post("/motion/events", json={"sensor": 700, "start": DAY, "end": DAY - 1})).status == 400
        assert (await client.post("/motion/events", json=[])).status == 400
        one = await client.post("/motion/events", json={"sensor": "700", "start": NIGHT, "end": NIGHT + 1})
        assert one.status == 200 and one.json()["switched_on"] == ["7-north"] and one.json()["alarms"]


async def test_frames_route(db_path: Path) -> None:
    before = Image.new("RGB", (160, 120), (60, 60, 60))
    after = before.copy()
    after.paste((230, 230, 230), (50, 40, 90, 80))

    def png(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue()

    boundary = "frames"
    form = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n"
                    f"Content-Type: image/png\r\n\r\n".encode() + png(image) + b"\r\n"
                    for name, image in (("before", before), ("after", after))) + f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    async with TestClient(app) as client:
        found = await client.post("/motion/frames", body=form, headers=headers)
        assert found.status == 200 and found.json()["motion"] is True
        assert (await client.post("/motion/frames", body=png(before))).status == 415  # one frame is not two
        assert (await client.post("/motion/frames", body=b"text")).status == 415


# -- a real node -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def motion_url(transport: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = str(tmp_path_factory.mktemp("motion-node"))
    with run_node("apps.motion:app", transport=transport, env={"SPRIGHT_DATA_DIR": data_dir}) as (port, _):
        yield f"http://127.0.0.1:{port}"


async def test_replay_sample_on_node(motion_url: str) -> None:
    sample = load()
    result = await replay(motion_url, sample, speed=600.0)  # 30 trace minutes in ~3 s
    assert result["events"] == len(sample) and result["statuses"] == {"200": result["requests"]}
    assert result["latency"]["p50_ms"] < 1000
    expected = Tracker()
    expected.ingest(sample)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{motion_url}/motion/zones") as response:
            zones = (await response.json())["zones"]
        async with http.post(f"{motion_url}/motion/events", json={"sensor": 9, "start": DAY}) as response:
            assert response.status == 404
    assert {n for n, z in zones.items() if z["light"] == "on"} == set(expected.open)
