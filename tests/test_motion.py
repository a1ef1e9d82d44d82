"""Motion detection: episodes from a hand-worked trace, lights and alarms, frames, the replayer on a node."""

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


# -- a trace worked out by hand ----------------------------------------------------------------
# The rules (apps/motion/episodes.py, MERGE_GAP = 60 s; a POST's detections are taken by start):
# a detection joins its zone's open episode if start <= episode end + 60 (the end becomes the
# larger end), else it closes that episode and opens one; one that ends more than 60 s before
# the open episode started is "late" (counted, ignored). After each POST the clock is the
# latest end seen, and every episode with end + 60 < clock is closed. The actuator
# (apps/motion/store.py) turns a start into light on (since = start, episodes + 1; an alarm if
# the zone is in quiet hours then) and an end into light off (on_seconds += end - since).
# Zones: 800-807 are 8-north, 700-707 7-north, 780-787 7-lobby (quiet 23-05 UTC; others 20-06).
T, N = DAY, NIGHT  # 12:00 UTC (no zone quiet), and 02:00 UTC (every zone quiet)
FIRST = [  # sent out of order on purpose; by start:
    (802, T + 177, T + 180),  # 5th: 177 > 116 + 60: closes 8-north [T, T+116], opens [T+177, T+180]
    (800, T + 0, T + 2),  # 1st: 8-north opens [T, T+2]
    (700, T + 10, T + 11),  # 2nd: 7-north opens [T+10, T+11]
    (801, T + 50, T + 55),  # 3rd: 50 <= 2 + 60: 8-north is now [T, T+55]
    (803, T + 115, T + 116),  # 4th: 115 <= 55 + 60, the boundary itself: [T, T+116]
]  # clock T+180: 7-north (11 + 60 < 180) closes; 8-north (180 + 60) stays open
SECOND = [
    (804, T + 100, T + 110),  # late: ends at 110 < 177 - 60 = 117, before the open episode began
    (805, T + 200, T + 201),  # 200 <= 180 + 60: 8-north is now [T+177, T+201]
    (780, N, N + 30),  # 7-lobby opens [N, N+30] at 02:00: quiet hours, an alarm
]  # clock N+30: 8-north (201 + 60 < N+30) closes; 7-lobby stays open
FIRST_ANSWER = {"accepted": 5, "late": 0, "clock": T + 180,  # actions in time order: starts 8-north@0,
                "episodes_started": ["8-north", "7-north", "8-north"],  # 7-north@10, 8-north@177;
                "episodes_ended": ["7-north", "8-north"],  # ends 7-north@11, 8-north@116
                "switched_on": ["8-north", "7-north", "8-north"], "switched_off": ["7-north", "8-north"],
                "alarms": []}
QUIET = "motion in 7-lobby during quiet hours"
SECOND_ANSWER = {"accepted": 3, "late": 1, "clock": N + 30,  # end 8-north@201, then start 7-lobby@N
                 "episodes_started": ["7-lobby"], "episodes_ended": ["8-north"],
                 "switched_on": ["7-lobby"], "switched_off": ["8-north"],
                 "alarms": [{"id": 1, "zone": "7-lobby", "at": N, "reason": QUIET}]}
# light, since, episodes, on_seconds, detections (late ones count), open episode
ZONES_AFTER = {
    "8-north": ("off", T + 201, 2, 116.0 + 24.0, 6, None),  # [T, T+116] and [T+177, T+201]
    "7-north": ("off", T + 11, 1, 1.0, 1, None),  # [T+10, T+11]
    "7-lobby": ("on", N, 1, 0.0, 1, {"zone": "7-lobby", "start": N, "end": N + 30, "detections": 1,
                                     "sensors": [780], "quiet": True}),
}
ALARMS_AFTER = {"count": 1, "alarms": [{"id": 1, "zone": "7-lobby", "at": N, "sensors": [780], "reason": QUIET}]}


def as_events(trace: list[tuple[int, float, float]]) -> list[dict]:
    return [{"sensor": sensor, "start": start, "end": end} for sensor, start, end in trace]


def check_zones(zones: dict) -> None:
    assert set(zones) == set(ZONES)
    for name, zone in zones.items():
        light, since, episodes, on_seconds, detections, episode = ZONES_AFTER.get(name, ("off", None, 0, 0.0, 0, None))
        assert (zone["light"], zone["since"], zone["episodes"], zone["on_seconds"], zone["detections"],
                zone["episode"]) == (light, since, episodes, on_seconds, detections, episode), name


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
async def test_a_hand_worked_trace_gives_the_worked_out_state(db_path: Path) -> None:
    async with TestClient(app) as client:
        answers = [(await client.post("/motion/events", json=as_events(part))) for part in (FIRST, SECOND)]
        assert [(r.status, r.json()) for r in answers] == [(200, FIRST_ANSWER), (200, SECOND_ANSWER)]
        check_zones((await client.get("/motion/zones")).json()["zones"])
        assert (await client.get("/motion/alarms")).json() == ALARMS_AFTER
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT SUM(episodes), SUM(light) FROM lights").fetchone() == (4, 1)


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
def motion_url(transport: str) -> Iterator[str]:
    with run_node("apps.motion:app", transport=transport) as (port, _):  # its SQLite in the node's data directory
        yield f"http://127.0.0.1:{port}"


@pytest.mark.slow
@pytest.mark.node
async def test_hand_worked_trace_and_a_sample_replay_on_node(motion_url: str) -> None:
    """The same worked-out state with sensor and actuator in processes of their own (the state
    lives in the sensor's process and the actuator's SQLite), then the replayer's whole sample."""
    async with aiohttp.ClientSession() as http:
        for part, expected in ((FIRST, FIRST_ANSWER), (SECOND, SECOND_ANSWER)):
            async with http.post(f"{motion_url}/motion/events", json=as_events(part)) as response:
                assert (response.status, await response.json()) == (200, expected)
        async with http.get(f"{motion_url}/motion/zones") as response:
            check_zones((await response.json())["zones"])
        async with http.get(f"{motion_url}/motion/alarms") as response:
            assert await response.json() == ALARMS_AFTER
        async with http.post(f"{motion_url}/motion/events", json={"sensor": 9, "start": DAY}) as response:
            assert response.status == 404
    sample = load()
    result = await replay(motion_url, sample, speed=600.0)  # 30 trace minutes in ~3 s
    assert result["events"] == len(sample) and result["statuses"] == {"200": result["requests"]}
    assert result["latency"]["p50_ms"] < 5000, "answered, not stuck behind timeouts"
