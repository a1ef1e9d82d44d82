"""Motion detection on spright: a building's motion sensors driving its lights and alarms.

``POST /motion/events`` runs sensor >> actuator (MERL-style detections → episodes → lights,
alarms); ``GET /motion/zones`` asks both for the building's state; ``GET /motion/alarms`` reads
the actuator's records; ``POST /motion/frames`` diffs two camera frames. Run it with
``python -m apps.motion``; replay a trace with ``python -m apps.motion.replay``.
"""

from __future__ import annotations

from apps.motion.functions import actuator, frames, sensor
from spright import App, PoolConfig
from spright.data.config import MiB

POOL = PoolConfig(max_body=8 * MiB, classes=((4096, 1024), (65536, 256), (MiB + 65536, 16)), large_slots=4)

app = App("motion", pool=POOL)
sense = app.add_function(sensor, name="sensor", concurrency=256)
act = app.add_function(actuator, name="actuator", concurrency=256)
camera = app.add_function(frames, name="frames", concurrency=16)

app.route("/motion/events", sense >> act, methods=["POST"])
app.route("/motion/zones", sense >> act)
app.route("/motion/alarms", act)
app.route("/motion/frames", camera, methods=["POST"])

__all__ = ["app"]
