"""Replay a MERL-format trace against a running node, at its recorded (time-scaled) pace.

Each detection is posted to ``POST /motion/events`` when its start time comes up, scaled by
``--speed`` (60: an hour of trace in a minute); events due at the same moment go together as
one JSON list, as a sensor gateway would batch them. Per event we record the end-to-end
latency and how late it was sent; events that follow a long idle gap are reported apart,
because that is the paper's point: an event-driven chain has no cold start after idling.

``python -m apps.motion.replay [--trace FILE] [--speed 60] [--url http://127.0.0.1:8080] [--csv OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from apps.loadkit import require_loopback, summary
from apps.motion.episodes import Detection
from apps.motion.trace import SAMPLE, load

IDLE = 5.0  # wall seconds of silence after which an event counts as "after idle"
BATCH_WINDOW = 0.005  # events due within 5 ms of each other are posted together


async def replay(url: str, detections: list[Detection], speed: float = 60.0,
                 max_seconds: float = 600.0) -> dict[str, Any]:
    """Send the trace; returns the summary and one record per event."""
    url = require_loopback(url)
    if not detections:
        return {"events": 0}
    t0, wall0 = detections[0].start, time.monotonic()
    records: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    tasks = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def send(batch: list[Detection], due: float, idle: bool) -> None:
            body = [{"sensor": d.sensor, "start": d.start, "end": d.end} for d in batch]
            sent = time.monotonic()
            async with session.post(f"{url}/motion/events", json=body) as response:
                await response.read()
                status = response.status
            latency = time.monotonic() - sent
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            records.extend({"sensor": d.sensor, "start": d.start, "latency_s": latency, "late_s": sent - due,
                            "status": status, "after_idle": idle} for d in batch)

        i, last_sent = 0, wall0
        while i < len(detections):
            due = wall0 + (detections[i].start - t0) / speed
            if due - wall0 > max_seconds:
                break
            batch = [detections[i]]
            i += 1
            while i < len(detections) and wall0 + (detections[i].start - t0) / speed - due <= BATCH_WINDOW:
                batch.append(detections[i])
                i += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.ensure_future(send(batch, due, due - last_sent >= IDLE)))
            last_sent = due
        await asyncio.gather(*tasks)
    wall = time.monotonic() - wall0
    idle = [r["latency_s"] for r in records if r["after_idle"]]
    busy = [r["latency_s"] for r in records if not r["after_idle"]]
    return {"events": len(records), "requests": len(tasks), "speed": speed, "wall_seconds": round(wall, 3),
            "trace_seconds": round(detections[min(i, len(detections)) - 1].start - t0, 3), "statuses": statuses,
            "latency": summary([r["latency_s"] for r in records]), "after_idle": summary(idle), "busy": summary(busy),
            "late_send_ms_max": round(max(r["late_s"] for r in records) * 1000, 3), "records": records}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apps.motion.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--trace", type=Path, default=SAMPLE, help="MERL-format file (default: the shipped sample)")
    parser.add_argument("--speed", type=float, default=60.0, help="trace seconds per wall second (default 60)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this much wall time")
    parser.add_argument("--csv", type=Path, help="write per-event latencies here")
    args = parser.parse_args(argv)
    result = asyncio.run(replay(args.url, load(args.trace), args.speed, args.max_seconds))
    records = result.pop("records", [])
    if args.csv:
        lines = ["sensor,start,latency_ms,late_ms,status,after_idle"]
        lines += [f"{r['sensor']},{r['start']},{r['latency_s'] * 1000:.3f},{r['late_s'] * 1000:.3f},{r['status']},"
                  f"{int(r['after_idle'])}" for r in records]
        args.csv.write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
