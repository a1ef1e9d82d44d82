"""Motion episodes from raw detections: the sensor function's state machine (pure, testable).

A PIR sensor fires every few seconds while someone moves beneath it; what a building wants to
know is "someone is in the north wing since 09:11", not 40 detections. Detections in one zone
that start within ``MERGE_GAP`` seconds of the zone's last one extend the same episode; a gap
ends it. Time is the trace's own clock (the latest detection seen), never the wall clock, so a
replay at any speed yields the same episodes. Late detections (older than the open episode)
are counted but do not reopen the past.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from apps.motion.building import SENSOR_ZONE, ZONES

MERGE_GAP = 60.0  # seconds of stillness that end an episode


@dataclass
class Episode:
    zone: str
    start: float
    end: float
    detections: int = 1
    sensors: set[int] = field(default_factory=set)
    quiet: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"zone": self.zone, "start": self.start, "end": self.end, "detections": self.detections,
                "sensors": sorted(self.sensors), "quiet": self.quiet}


@dataclass
class Detection:
    sensor: int
    start: float
    end: float


class Tracker:
    """Per-sensor counters and per-zone open episodes; ``ingest`` returns what changed."""

    def __init__(self, merge_gap: float = MERGE_GAP) -> None:
        self.merge_gap = merge_gap
        self.clock = 0.0
        self.open: dict[str, Episode] = {}
        self.sensor_counts: dict[int, int] = {}
        self.sensor_last: dict[int, float] = {}
        self.late = 0

    def ingest(self, detections: list[Detection]) -> list[dict[str, Any]]:
        """Apply detections (any order); returns actions: episode starts and ends, oldest first."""
        actions: list[dict[str, Any]] = []
        for d in sorted(detections, key=lambda d: d.start):
            self.sensor_counts[d.sensor] = self.sensor_counts.get(d.sensor, 0) + 1
            self.sensor_last[d.sensor] = max(self.sensor_last.get(d.sensor, 0.0), d.end)
            zone = SENSOR_ZONE[d.sensor]
            episode = self.open.get(zone)
            if episode is not None and d.end < episode.start - self.merge_gap:
                self.late += 1
                continue
            if episode is not None and d.start <= episode.end + self.merge_gap:
                episode.end = max(episode.end, d.end)
                episode.detections += 1
                episode.sensors.add(d.sensor)
                continue
            if episode is not None:
                actions.append(self._close(zone))
            hour = dt.datetime.fromtimestamp(d.start, dt.UTC).hour
            episode = Episode(zone, d.start, d.end, sensors={d.sensor}, quiet=ZONES[zone].is_quiet(hour))
            self.open[zone] = episode
            actions.append({"action": "start", "at": d.start, **episode.as_dict()})
            self.clock = max(self.clock, d.end)
        if detections:
            self.clock = max(self.clock, max(d.end for d in detections))
        for zone, episode in sorted(self.open.items()):
            if episode.end + self.merge_gap < self.clock:
                actions.append(self._close(zone))
        actions.sort(key=lambda a: a["at"])
        return actions

    def _close(self, zone: str) -> dict[str, Any]:
        episode = self.open.pop(zone)
        return {"action": "end", "at": episode.end, **episode.as_dict()}

    def zones(self) -> dict[str, Any]:
        """Every zone's open episode (or None) and detection count."""
        return {name: {"episode": self.open[name].as_dict() if name in self.open else None,
                       "detections": sum(self.sensor_counts.get(s, 0) for s in zone.sensors)}
                for name, zone in ZONES.items()}
