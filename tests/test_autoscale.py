"""The KPA-style autoscaler on synthetic traces: one sample and one decision per second, ``now`` explicit.

Most traces use ``target=10`` so the needs can be worked out by hand: need = ceil(average / 10).
A window average at second t covers the buckets from max(first sample, t - window + 1) to t.
"""

import math

import pytest

from spright.data.autoscale import Autoscaler, Decision, ScalePolicy, WindowAverage, instances_for


class Function:
    """A function whose instances start and stop at once: ``ready`` becomes each decision, if ``follow``."""

    def __init__(self, policy: ScalePolicy, ready: int) -> None:
        self.scaler = Autoscaler(policy)
        self.ready = ready

    def run(self, seconds: range, in_flight: float, *, follow: bool = True) -> list[Decision]:
        decisions = []
        for now in seconds:
            self.scaler.record(now, in_flight)
            decision = self.scaler.decide(now, self.ready)
            if follow:
                self.ready = decision.desired
            decisions.append(decision)
        return decisions


def desired(decisions: list[Decision]) -> list[int]:
    return [d.desired for d in decisions]


def test_steady_load_at_the_target_keeps_the_count() -> None:
    fn = Function(ScalePolicy(target=10), ready=3)
    decisions = fn.run(range(120), 30)
    # stable and panic averages are 30 throughout: ceil(30 / 10) = 3; panic ratio 3 / 3 = 1 < 2
    assert desired(decisions) == [3] * 120
    assert not any(d.panicking for d in decisions)


def test_a_step_up_panics_and_reaches_the_need_within_the_panic_window() -> None:
    fn = Function(ScalePolicy(target=10), ready=1)
    assert desired(fn.run(range(60), 10)) == [1] * 60
    decisions = fn.run(range(60, 66), 100)
    # panic window at t = 60..65 holds (6 - k) seconds of 10 and k of 100, k = 1..6:
    #   t=60: (50 + 100) / 6 = 25 -> 3, and 3 / ready 1 >= 2: panic
    #   t=61: 240 / 6 = 40 -> 4;  t=62: 330 / 6 = 55 -> 6;  t=63: 420 / 6 = 70 -> 7
    #   t=64: 510 / 6 = 85 -> 9;  t=65: 600 / 6 = 100 -> 10 = 100 in flight / target 10
    assert desired(decisions) == [3, 4, 6, 7, 9, 10]
    assert all(d.panicking for d in decisions)
    # the stable window at t=60 is seconds 1..60: (59 * 10 + 100) / 60 = 11.5
    assert decisions[0].stable_concurrency == pytest.approx(11.5)
    assert decisions[0].panic_concurrency == pytest.approx(25.0)


def test_panic_holds_through_a_drop_then_ends_a_stable_window_after_the_last_crossing() -> None:
    fn = Function(ScalePolicy(target=10), ready=1)
    fn.run(range(60), 10)
    # the new instances take 6 s to start: ready stays 1, so every second is over the threshold
    # (needs 3, 4, 6, 7, 9, 10 as above, each >= 2 * 1); the last crossing is at t=65
    assert desired(fn.run(range(60, 66), 100, follow=False)) == [3, 4, 6, 7, 9, 10]
    fn.ready = 10
    held = fn.run(range(66, 126), 30)
    # the load drops to 30 (needs 3), but panic never scales down: 10 until t=125 = 65 + 60
    assert desired(held) == [10] * 60
    assert all(d.panicking for d in held)
    assert "holding 10: no scale-down while panicking" in held[100 - 66].reason
    after = fn.run(range(126, 130), 30)
    # t=126 > 65 + 60: stable window 67..126 is all 30 -> needs 3, but max_scale_down_rate 2
    # allows floor(10 / 2) = 5; t=127: floor(5 / 2) = 2 <= 3, so the stable need of 3 rules
    assert desired(after) == [5, 3, 3, 3]
    assert not any(d.panicking for d in after)
    assert after[0].reason == "stable: 30.00 in flight over 60 s needs 3 (ready 10); max_scale_down_rate allows 5"
    # a new panic starts from its own need, not the old one's 10: at t=130 the panic window 125..130
    # averages (5 * 30 + 300) / 6 = 75 -> 8, and 8 / 3 >= 2; stable 71..130: (59 * 30 + 300) / 60 -> 4
    [again] = fn.run(range(130, 131), 300)
    assert (again.desired, again.panicking) == (8, True)


def test_the_panic_threshold_is_inclusive_and_panic_takes_the_larger_need() -> None:
    at_threshold = Autoscaler(ScalePolicy(target=10))
    at_threshold.record(0, 40)
    assert at_threshold.decide(0, 2).panicking  # needs 4 = 2.0 * ready 2
    below = Autoscaler(ScalePolicy(target=10))
    below.record(0, 40)
    assert not below.decide(0, 3).panicking  # needs 4 too, but 4 / ready 3 < 2

    # consulted at t=60 after 100 in flight at t=0..53 and 20 at t=54..60, with one instance left:
    # panic window 55..60 averages 20 -> 2, and 2 / 1 >= 2; stable 1..60: (53 * 100 + 7 * 20) / 60
    # = 90.67 -> 10. Panicking follows the larger need: 10
    scaler = Autoscaler(ScalePolicy(target=10))
    for now in range(61):
        scaler.record(now, 100 if now < 54 else 20)
    decision = scaler.decide(60, 1)
    assert (decision.desired, decision.panicking) == (10, True)
    assert decision.reason == "panic: 20.00 in flight over 6 s needs 2 (ready 1); stable window needs 10"


def test_max_scale_up_rate_bounds_growth() -> None:
    fn = Function(ScalePolicy(target=10, max_instances=100, max_scale_up_rate=2), ready=1)
    # a fresh run averages over the seconds it has: 100 in flight needs 10 at once;
    # each decision allows ceil(2 * ready): 2, 4, 8, then the need of 10
    decisions = fn.run(range(4), 100)
    assert desired(decisions) == [2, 4, 8, 10]
    assert decisions[0].reason.endswith("max_scale_up_rate allows 2")
    # a slow rate still grows by one: ceil(1.1 * 3) = ceil(3.3) = 4
    scaler = Autoscaler(ScalePolicy(target=1, max_instances=100, max_scale_up_rate=1.1))
    scaler.record(0, 10)
    assert scaler.decide(0, 3).desired == 4


def test_min_and_max_instances_clamp() -> None:
    capped = Autoscaler(ScalePolicy(target=10, max_instances=4))
    capped.record(0, 100)
    decision = capped.decide(0, 1)  # needs ceil(100 / 10) = 10, in panic (10 / 1 >= 2)
    assert (decision.desired, decision.panicking) == (4, True)
    assert decision.reason.endswith("max_instances keeps 4")

    floored = Autoscaler(ScalePolicy(target=10, min_instances=3))
    floored.record(0, 0)
    decision = floored.decide(0, 3)  # needs 0; max_scale_down_rate allows floor(3 / 2) = 1; min 3
    assert decision.desired == 3
    assert decision.reason.endswith("min_instances keeps 3")


def test_scale_to_zero_only_with_min_zero_and_after_the_grace() -> None:
    to_zero = Function(ScalePolicy(target=10, min_instances=0, scale_to_zero_grace=30), ready=1)
    assert desired(to_zero.run(range(10), 5)) == [1] * 10  # last request in flight at t=9
    # t=10..38: fewer than 30 s without a request; the stable average (50 / (t + 1)) still needs 1
    assert desired(to_zero.run(range(10, 39), 0)) == [1] * 29
    gone = to_zero.run(range(39, 41), 0)  # t=39 = 9 + 30
    assert desired(gone) == [0, 0]
    assert gone[0].reason == "stable: 1.25 in flight over 60 s needs 0 (ready 1); no request for 30 s"

    kept = Function(ScalePolicy(target=10, min_instances=1, scale_to_zero_grace=30), ready=1)
    kept.run(range(10), 5)
    assert desired(kept.run(range(10, 200), 0)) == [1] * 190


def test_scale_to_zero_keeps_the_last_instance_for_the_grace_and_steps_down_at_the_rate() -> None:
    fn = Function(ScalePolicy(target=10, min_instances=0, scale_to_zero_grace=30), ready=4)
    decisions = fn.run(range(31), 0)
    # no demand: floor(4 / 2) = 2, then floor(2 / 2) = 1, which stays until 30 s after the
    # first sample (a fresh scaler counts its first sample as the latest demand), then 0
    assert desired(decisions) == [2] + [1] * 29 + [0]
    assert decisions[5].reason.endswith("scale_to_zero_grace keeps 1")


def test_a_grace_longer_than_the_stable_window_still_keeps_the_last_instance() -> None:
    fn = Function(ScalePolicy(target=10, min_instances=0, scale_to_zero_grace=100), ready=1)
    fn.run(range(10), 5)  # last request in flight at t=9
    # from t=69 the stable window holds only zeros (needs 0), but the grace runs until t=109
    assert desired(fn.run(range(10, 109), 0)) == [1] * 99
    assert desired(fn.run(range(109, 110), 0)) == [0]


def test_a_request_at_zero_instances_asks_for_one_at_once() -> None:
    fn = Function(ScalePolicy(target=10, min_instances=0), ready=0)
    assert desired(fn.run(range(100), 0)) == [0] * 100  # no demand never starts an instance
    # one request at t=100: stable 1 / 60, panic 1 / 6; any demand needs an instance
    [decision] = fn.run(range(100, 101), 1)
    assert (decision.desired, decision.panicking) == (1, False)

    burst = Function(ScalePolicy(target=10, min_instances=0), ready=0)
    burst.run(range(100), 0)
    # 200 at t=100: panic window 95..100 averages 200 / 6 = 33.3 -> 4, and 4 / max(0, 1) >= 2
    [decision] = burst.run(range(100, 101), 200)
    assert (decision.desired, decision.panicking) == (4, True)
    assert decision.reason == "panic: 33.33 in flight over 6 s needs 4 (ready 0)"


def test_the_reason_names_the_mode_and_the_figures() -> None:
    panicking = Autoscaler(ScalePolicy(target=8))
    panicking.record(0, 24)
    assert panicking.decide(0, 1).reason == "panic: 24.00 in flight over 6 s needs 3 (ready 1)"
    stable = Autoscaler(ScalePolicy(target=10))
    stable.record(0, 3.1)
    assert stable.decide(0, 1).reason == "stable: 3.10 in flight over 60 s needs 1 (ready 1)"


def test_no_sample_yet_keeps_what_is_ready_within_bounds() -> None:
    scaler = Autoscaler(ScalePolicy(min_instances=2, max_instances=5))
    assert scaler.decide(0, 7).desired == 5
    assert scaler.decide(0, 0) == Decision(2, "no samples yet: keeping 2 (ready 0)", False, 0.0, 0.0)


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"target": 0}, "target", "0"),
        ({"target": math.nan}, "target", "nan"),
        ({"min_instances": -1}, "min_instances", "-1"),
        ({"max_instances": 0, "min_instances": 0}, "max_instances", "0"),
        ({"max_instances": 2, "min_instances": 3}, "max_instances", "2"),
        ({"stable_window": 0.0}, "stable_window", "0.0"),
        ({"stable_window": math.inf}, "stable_window", "inf"),
        ({"panic_window": 61.0}, "panic_window", "61.0"),
        ({"panic_window": 0.0}, "panic_window", "0.0"),
        ({"panic_threshold": 1.0}, "panic_threshold", "1.0"),
        ({"max_scale_up_rate": 1.0}, "max_scale_up_rate", "1.0"),
        ({"max_scale_down_rate": 0.5}, "max_scale_down_rate", "0.5"),
        ({"scale_to_zero_grace": -1.0}, "scale_to_zero_grace", "-1.0"),
    ],
)
def test_policy_validation_names_the_field_and_the_value(changes: dict, field: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"^ScalePolicy\.{field} must be .*, got {value}$"):
        ScalePolicy(**changes)


def test_samples_and_ready_are_checked() -> None:
    scaler = Autoscaler(ScalePolicy())
    scaler.record(5, 1)
    with pytest.raises(ValueError, match="time order"):
        scaler.record(4, 1)
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError, match="in_flight"):
            scaler.record(6, bad)
    with pytest.raises(ValueError, match="ready"):
        scaler.decide(6, -1)


def test_target_from_concurrency_and_needs_without_float_dust() -> None:
    assert ScalePolicy.for_concurrency(10, max_instances=4) == ScalePolicy(target=7.0, max_instances=4)
    assert ScalePolicy().target == pytest.approx(0.7 * 64)
    assert instances_for(2.1, 0.7) == 3  # 2.1 / 0.7 == 3.0000000000000004 in floats
    assert instances_for(1e-9, 1000) == 1  # any demand needs an instance
    assert instances_for(0, 10) == 0


def test_window_average_buckets_seconds_like_knative() -> None:
    window = WindowAverage(6)
    window.record(0.2, 10)
    window.record(0.7, 20)
    assert window.average(0.9) == 15  # samples within one second are averaged
    window.record(3.0, 6)
    assert window.average(3.0) == (15 + 0 + 0 + 6) / 4  # seconds without a sample count as 0
    assert window.average(5.5) == (15 + 0 + 0 + 6) / 4  # ... but not the time after the latest sample
    assert window.average(7.0) == (0 + 6) / 2  # the window is seconds 2..7; second 0 has left it
    assert window.average(9.5) == 0  # nothing in seconds 4..9
    window.record(20, 8)
    assert window.average(20) == 8  # a window without samples: the run starts afresh
