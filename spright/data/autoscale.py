"""How many instances a function should have: Knative's KPA, as a pure object (no clock, no I/O).

Each tick the supervisor records the requests in flight at the function (at its workers or waiting)
and asks for a decision. Samples go into one-second buckets; two window averages read them: the
stable window (60 s) and the panic window (6 s). Instances needed = ceil(average / target).
Normally the stable need rules. When the panic need reaches ``panic_threshold`` times the ready
instances the scaler panics: it follows the larger need and never scales down, until a whole
stable window has passed since the need last crossed the threshold. Each decision moves at most
from ``ready`` (1 at zero) up to ceil(ready * max_scale_up_rate) and down to floor(ready /
max_scale_down_rate), then stays within min/max_instances. With ``min_instances=0`` the last instance
goes once no request has been in flight for ``scale_to_zero_grace`` seconds; any request in flight
at zero instances needs one at once. (Knative: pkg/autoscaler/scaling/autoscaler.go, .../aggregation/
bucketing.go, .../config/config.go for the defaults, pkg/reconciler/autoscaling/kpa/scaler.go.)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

BUCKET_SECONDS = 1.0  # Knative's BucketSize: samples within one bucket are averaged together
TARGET_UTILISATION = 0.7  # Knative's default: aim at 70% of what an instance may run at once


@dataclass(frozen=True)
class ScalePolicy:
    target: float = TARGET_UTILISATION * 64  # requests in flight per instance (70% of concurrency=64)
    min_instances: int = 1  # 0 allows scale to zero
    max_instances: int = 16
    stable_window: float = 60.0  # seconds
    panic_window: float = 6.0  # seconds, Knative's 10% of the stable window
    panic_threshold: float = 2.0  # panic when the panic need is this many times the ready instances
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace: float = 30.0  # seconds without a request in flight before the last instance goes

    def __post_init__(self) -> None:
        least_max = max(self.min_instances, 1)
        rules = {
            "target": ("> 0", self.target > 0),
            "min_instances": (">= 0", self.min_instances >= 0),
            "max_instances": (f">= max(min_instances, 1) = {least_max}", self.max_instances >= least_max),
            "stable_window": ("> 0", self.stable_window > 0),
            "panic_window": (
                f"in (0, stable_window={self.stable_window!r}]",
                0 < self.panic_window <= self.stable_window,
            ),
            "panic_threshold": ("> 1", self.panic_threshold > 1),
            "max_scale_up_rate": ("> 1", self.max_scale_up_rate > 1),
            "max_scale_down_rate": ("> 1", self.max_scale_down_rate > 1),
            "scale_to_zero_grace": ("> 0", self.scale_to_zero_grace > 0),
        }
        for name, (rule, ok) in rules.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise ValueError(f"ScalePolicy.{name} must be {rule} (and finite), got {value!r}")

    @classmethod
    def for_concurrency(cls, concurrency: int, **fields: Any) -> ScalePolicy:
        """The policy for a function that runs at most ``concurrency`` requests per instance."""
        return cls(target=TARGET_UTILISATION * concurrency, **fields)


@dataclass(frozen=True)
class Decision:
    desired: int  # instances to have
    reason: str  # one line: the mode, the figures behind it and any limit that changed the count
    panicking: bool
    stable_concurrency: float  # average requests in flight over the stable window
    panic_concurrency: float  # ... and over the panic window


def instances_for(concurrency: float, target: float) -> int:
    """ceil(concurrency / target) without float dust (2.1 / 0.7 needs 3, not 4); any demand needs one."""
    share = concurrency / target
    return max(math.ceil(round(share, 6)), 1) if share > 0 else 0


class WindowAverage:
    """Average of per-second buckets over the last ``window`` seconds (Knative's TimedFloat64Buckets).

    A second without a sample counts as 0, except after the latest sample; a window without any
    sample starts afresh, so a fresh run is averaged over the seconds it has, not the whole window.
    """

    def __init__(self, window: float) -> None:
        self.buckets_per_window = math.ceil(window / BUCKET_SECONDS)
        self._buckets: deque[tuple[int, float, int]] = deque()  # (bucket, sum of samples, samples)
        self._run_start = 0  # first bucket since the last window without samples

    def record(self, now: float, value: float) -> None:
        bucket = math.floor(now / BUCKET_SECONDS)
        if self._buckets and self._buckets[-1][0] == bucket:
            _, total, count = self._buckets.pop()
            self._buckets.append((bucket, total + value, count + 1))
            return
        if not self._buckets or bucket - self._buckets[-1][0] >= self.buckets_per_window:
            self._buckets.clear()
            self._run_start = bucket
        self._buckets.append((bucket, value, 1))
        while self._buckets[0][0] <= bucket - self.buckets_per_window:
            self._buckets.popleft()

    def average(self, now: float) -> float:
        if not self._buckets:
            return 0.0
        first = max(self._run_start, math.floor(now / BUCKET_SECONDS) - self.buckets_per_window + 1)
        last = self._buckets[-1][0]
        if last < first:
            return 0.0
        return sum(total / count for bucket, total, count in self._buckets if bucket >= first) / (last - first + 1)


class Autoscaler:
    """Feed it ``record`` once per tick and act on ``decide``; ``now`` is monotonic seconds."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self._stable = WindowAverage(policy.stable_window)
        self._panic = WindowAverage(policy.panic_window)
        self._latest_sample: float | None = None
        self._last_busy: float | None = None  # latest sample with demand (the first sample if none had)
        self._last_over_threshold: float | None = None  # None: not panicking
        self._panic_peak = 0  # the most instances asked for in this panic: panic never scales down

    def record(self, now: float, in_flight: float) -> None:
        """One sample: the requests in flight at the function (running or waiting) at ``now``."""
        if not (math.isfinite(in_flight) and in_flight >= 0):
            raise ValueError(f"in_flight must be a finite number >= 0, got {in_flight!r}")
        if self._latest_sample is not None and now < self._latest_sample:
            raise ValueError(f"samples must come in time order: {now!r} is before {self._latest_sample!r}")
        self._latest_sample = now
        self._stable.record(now, in_flight)
        self._panic.record(now, in_flight)
        if in_flight > 0 or self._last_busy is None:
            self._last_busy = now

    def decide(self, now: float, ready: int) -> Decision:
        """The instances to have at ``now``, given ``ready`` instances serving now."""
        if ready < 0:
            raise ValueError(f"ready must be >= 0, got {ready!r}")
        policy = self.policy
        if self._last_busy is None:  # no sample yet
            keep = min(max(ready, policy.min_instances), policy.max_instances)
            return Decision(keep, f"no samples yet: keeping {keep} (ready {ready})", False, 0.0, 0.0)
        stable, panic = self._stable.average(now), self._panic.average(now)
        ready_or_one = max(ready, 1)  # the rates and the panic ratio act as if one were ready at zero
        idle_for = now - self._last_busy
        idle = policy.min_instances == 0 and idle_for >= policy.scale_to_zero_grace
        stable_need = 0 if idle else instances_for(stable, policy.target)
        panic_need = instances_for(panic, policy.target)

        if panic_need / ready_or_one >= policy.panic_threshold:
            self._last_over_threshold = now
        elif self._last_over_threshold is not None and now > self._last_over_threshold + policy.stable_window:
            self._last_over_threshold, self._panic_peak = None, 0
        panicking = self._last_over_threshold is not None

        notes = []
        if panicking:
            need = max(stable_need, panic_need)
            head = f"panic: {panic:.2f} in flight over {policy.panic_window:g} s needs {panic_need}"
            if stable_need > panic_need:
                notes.append(f"stable window needs {stable_need}")
        else:
            need = stable_need
            head = f"stable: {stable:.2f} in flight over {policy.stable_window:g} s needs {need}"
            if idle:
                notes.append(f"no request for {idle_for:g} s")
        head += f" (ready {ready})"

        fastest_up = math.ceil(policy.max_scale_up_rate * ready_or_one)
        fastest_down = math.floor(ready_or_one / policy.max_scale_down_rate)
        desired = min(max(need, fastest_down), fastest_up)
        if desired != need:
            notes.append(f"max_scale_{'up' if desired < need else 'down'}_rate allows {desired}")
        if panicking:
            if desired < self._panic_peak:
                notes.append(f"holding {self._panic_peak}: no scale-down while panicking")
            self._panic_peak = desired = max(desired, self._panic_peak)
        # min_instances=0 keeps the last instance (never starts one) until the function is idle
        lowest = 0 if idle else max(policy.min_instances, min(ready, 1))
        bounded = min(max(desired, lowest), policy.max_instances)
        if bounded < desired:
            notes.append(f"max_instances keeps {bounded}")
        elif bounded > desired:
            notes.append(f"{'min_instances' if policy.min_instances else 'scale_to_zero_grace'} keeps {bounded}")
        return Decision(bounded, "; ".join([head, *notes]), panicking, stable, panic)
