"""The building the motion sensors live in: which sensor watches which zone, and quiet hours.

Modelled on the MERL office building the paper's trace comes from: two floors, each with
four wings and a lobby, passive-infrared sensors along the corridors. A zone's quiet hours
(UTC) are when nobody is expected: activity then raises an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOORS = (7, 8)
WINGS = ("north", "south", "east", "west", "lobby")
SENSORS_PER_ZONE = 8


@dataclass(frozen=True)
class Zone:
    name: str
    sensors: tuple[int, ...]
    quiet_from: int  # hour (UTC) quiet hours start
    quiet_until: int  # hour (UTC) they end (may wrap past midnight)

    def is_quiet(self, hour: int) -> bool:
        if self.quiet_from <= self.quiet_until:
            return self.quiet_from <= hour < self.quiet_until
        return hour >= self.quiet_from or hour < self.quiet_until


def _zones() -> dict[str, Zone]:
    zones = {}
    for floor in FLOORS:
        for w, wing in enumerate(WINGS):
            first = floor * 100 + w * 20  # sensor ids like MERL's: 700..707, 720..727, ...
            quiet = (23, 5) if wing == "lobby" else (20, 6)
            zones[f"{floor}-{wing}"] = Zone(f"{floor}-{wing}", tuple(range(first, first + SENSORS_PER_ZONE)), *quiet)
    return zones


ZONES: dict[str, Zone] = _zones()
SENSOR_ZONE: dict[int, str] = {sensor: zone.name for zone in ZONES.values() for sensor in zone.sensors}
