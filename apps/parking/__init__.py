"""Parking detection & charging on spright: upstream's chain doing the real work.

A gate camera posts a photo; ``detection`` finds and reads the licence plate (OpenCV +
tesseract), ``search`` looks the car up, ``index`` logs the gate event (first sighting: entry,
next: exit), ``persist`` writes the parking session and ``charging`` prices the stay. Each hop's
return value is the next hop's payload. Run it with ``python -m apps.parking``.
"""

from __future__ import annotations

from apps.parking.functions import charging, detection, index, persist, review, search, sessions
from spright import App, PoolConfig
from spright.data.config import MiB

# Photos are 30-150 KB: a burst of 164 fits the 256 KiB class; the rest is small JSON.
POOL = PoolConfig(max_body=8 * MiB, classes=((4096, 2048), (65536, 512), (262144, 256), (MiB + 65536, 32)),
                  large_slots=4)
TIMEOUT = 120.0  # a burst of 164 photos queues for OCR on a small machine: give it time, not 504s

app = App("parking", pool=POOL, default_timeout=TIMEOUT)
detect = app.add_function(detection, name="detection", concurrency=256)
find = app.add_function(search, name="search", concurrency=256)
log = app.add_function(index, name="index", concurrency=256)
keep = app.add_function(persist, name="persist", concurrency=256)
bill = app.add_function(charging, name="charging", concurrency=256)
listing = app.add_function(sessions, name="sessions")
resolve = app.add_function(review, name="review")

app.route("/parking/events", detect >> find >> log >> keep >> bill, methods=["POST"])  # route 1
app.route("/parking/quote", detect >> find >> bill, methods=["POST"])  # route 2
app.route("/parking/sessions", listing)
app.route("/parking/review", resolve, methods=["POST"])  # an operator resolves a stay under review

__all__ = ["app"]
