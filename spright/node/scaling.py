"""The supervisor's autoscaler: once a tick, each autoscaled function's requests in flight
(handlers running or waiting at its live instances, from the counter table the workers
write) go into its KPA (spright.data.autoscale), whose decision the supervisor applies. The last
decisions, with their reasons, are kept for ``spright stats``."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from spright.data.autoscale import Autoscaler, Decision
from spright.data.table import RouteTable
from spright.host.counters import IN_FLIGHT
from spright.routing import App

TICK = 1.0  # seconds between decisions (Knative's autoscaler ticks every 2 s)


class Autoscaling:
    def __init__(self, app: App, table: RouteTable) -> None:
        self._scalers = {
            table.function_id(name): Autoscaler(function.autoscale)
            for name, function in app.functions.items()
            if function.autoscale is not None
        }
        self._table = table
        self.decisions: deque[dict[str, Any]] = deque(maxlen=20)  # the last changes, newest last

    def __bool__(self) -> bool:
        return bool(self._scalers)

    def tick(self, rows: list[list[int]], live: Callable[[int], tuple[int, ...]], waiting: Callable[[int], int],
             scale: Callable[[str, int], None]) -> None:
        """Sample every autoscaled function (in flight at its instances, plus ``waiting`` at
        the activator) and apply what its scaler decides."""
        now = time.monotonic()
        for function_id, scaler in self._scalers.items():
            serving = live(function_id)
            demand = sum(rows[endpoint][IN_FLIGHT] for endpoint in serving) + waiting(function_id)
            scaler.record(now, float(demand))
            decision = scaler.decide(now, len(serving))
            if decision.desired != len(serving):
                name = self._table.name_of(function_id)
                scale(name, decision.desired)
                self.decisions.append(_record(name, len(serving), decision))


    def activated(self, name: str, waiting: int) -> None:
        """The activator started the first instance of ``name``, at zero."""
        self.decisions.append({"at": time.time(), "function": name, "from": 0, "to": 1, "panicking": False,
                               "reason": f"activator: {waiting} request(s) waiting at zero instances"})


def _record(name: str, ready: int, decision: Decision) -> dict[str, Any]:
    return {"at": time.time(), "function": name, "from": ready, "to": decision.desired,
            "panicking": decision.panicking, "reason": decision.reason}
