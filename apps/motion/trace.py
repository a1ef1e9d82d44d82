"""Motion-sensor traces in the MERL format, and a generator of realistic ones.

The MERL motion-detector data set (Wren et al., MERL TR2007-069) records, per line, a sensor id
and the start and end of one detection, as milliseconds since the epoch. Ours is the same,
whitespace separated, ``#`` comments allowed::

    # sensor start_ms end_ms
    420 1154697071000 1154697072500

Real traces are sparse and bursty: most sensors are silent most of the time, a person walking
down a corridor fires a run of neighbouring sensors a second or two apart, and working hours
are busier than nights. The generator reproduces that shape from a seed.

``python -m apps.motion.trace --minutes 60 --out trace.merl`` writes one.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable
from pathlib import Path

from apps.motion.building import SENSOR_ZONE, ZONES
from apps.motion.episodes import Detection

SAMPLE = Path(__file__).parent / "data" / "sample.merl"
DEFAULT_START = 1154720700.0  # 2006-08-04 19:45 UTC (MERL recorded that day): quiet hours start at 20:00


def parse(text: str) -> list[Detection]:
    """Read MERL-format lines; raises ValueError naming the bad line."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.replace(",", " ").split()
        try:
            sensor, start, end = int(fields[0]), int(fields[1]) / 1000, int(fields[2]) / 1000
        except (ValueError, IndexError):
            raise ValueError(f"line {number}: expected 'sensor start_ms end_ms', got {line!r}") from None
        out.append(Detection(sensor, start, end))
    return sorted(out, key=lambda d: d.start)


def format_merl(detections: Iterable[Detection]) -> str:
    lines = ["# MERL-format motion trace: sensor start_ms end_ms"]
    lines += [f"{d.sensor} {round(d.start * 1000)} {round(d.end * 1000)}" for d in detections]
    return "\n".join(lines) + "\n"


def generate(minutes: float = 60.0, seed: int = 1, start: float = DEFAULT_START,
             walks_per_hour: float = 40.0) -> list[Detection]:
    """A synthetic trace: people walking corridors (runs of neighbouring sensors) and idling.

    Walk arrivals are Poisson, with group bursts (several people together) now and then; each
    walk passes 3-8 consecutive sensors of one zone, 1-3 s apart, each firing for 0.5-2.5 s.
    """
    rng = random.Random(seed)
    names = sorted(ZONES)
    out: list[Detection] = []
    t, end = start, start + minutes * 60
    while True:
        t += rng.expovariate(walks_per_hour / 3600)
        if t >= end:
            break
        zone = ZONES[rng.choice(names)]
        people = 1 if rng.random() < 0.85 else rng.randint(2, 6)  # a burst: a group walks by
        for person in range(people):
            at = t + person * rng.uniform(0.5, 2.0)
            length = rng.randint(3, len(zone.sensors))
            first = rng.randint(0, len(zone.sensors) - length)
            path = zone.sensors[first:first + length]
            for sensor in path if rng.random() < 0.5 else reversed(path):
                fired = rng.uniform(0.5, 2.5)
                out.append(Detection(sensor, round(at, 3), round(at + fired, 3)))
                at += rng.uniform(1.0, 3.0)
    return sorted((d for d in out if d.start < end), key=lambda d: d.start)


def load(path: Path = SAMPLE) -> list[Detection]:
    detections = parse(path.read_text())
    unknown = {d.sensor for d in detections} - SENSOR_ZONE.keys()
    if unknown:
        raise ValueError(f"{path}: sensors not in the building: {sorted(unknown)[:5]}")
    return detections


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apps.motion.trace", description="Write a MERL-format trace.")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--walks-per-hour", type=float, default=40.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    detections = generate(args.minutes, args.seed, walks_per_hour=args.walks_per_hour)
    args.out.write_text(format_merl(detections))
    print(f"wrote {len(detections)} detections over {args.minutes:g} minutes to {args.out}")


if __name__ == "__main__":
    main()
