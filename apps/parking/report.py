"""Plate accuracy and per-function time: rendered cars through the real chain, against ground truth.

Runs the app in process (TestClient: the real gateway, pool, descriptors and functions) and
posts every photo to route 2 (``/parking/quote``), then a few through route 1 so index and persist
are timed too. Exact match means the plate's every character right (by its key, ``plates.key``: in
``any``, O read for 0 is the same plate); an unreadable plate (422) is a miss. ``review`` counts the
reads OCR was unsure of (right or wrong): such a stay is held for an operator, not charged.

``python -m apps.parking.report [--count 200] [--seed 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from typing import Any

from apps.loadkit import summary
from apps.parking.plates import key
from apps.parking.synth import samples


async def measure(count: int = 200, seed: int = 1, route1: int = 10) -> dict[str, Any]:
    os.environ.setdefault("SPRIGHT_PARKING_DB", os.path.join(tempfile.mkdtemp(prefix="parking-report-"), "p.db"))
    from apps.parking import app  # after the database is chosen
    from spright.testing import TestClient

    photos = await asyncio.to_thread(samples, count, seed)
    functions: dict[str, list[float]] = {}
    misses: list[dict[str, Any]] = []
    correct, unreadable, review = 0, 0, 0
    started = time.monotonic()
    async with TestClient(app) as client:
        for n, photo in enumerate(photos):
            path = "/parking/events" if n < route1 else "/parking/quote"
            response = await client.post(path, body=photo.jpeg, headers={"content-type": "image/jpeg"})
            answer = response.json()
            if response.status == 422:
                unreadable += 1
                misses.append({"n": n, "truth": photo.plate, "read": None, "error": answer["error"]})
                continue
            review += answer.get("state") == "review"
            if answer["plate_key"] == key(photo.plate):
                correct += 1
            else:
                misses.append({"n": n, "truth": photo.plate, "read": answer["plate"]})
            for name, ms in answer["timings_ms"].items():
                functions.setdefault(name, []).append(ms / 1000)
    return {"images": count, "seed": seed, "exact": correct, "accuracy": round(correct / count, 4),
            "unreadable": unreadable, "review": review, "wrong": count - correct - unreadable, "misses": misses,
            "wall_s": round(time.monotonic() - started, 2),
            "functions": {name: summary(v) for name, v in sorted(functions.items())}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m apps.parking.report", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.count, args.seed)), indent=2))


if __name__ == "__main__":
    main()
