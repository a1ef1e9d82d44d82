"""bench.instances end to end at a tiny scale: every scenario runs (1 and 2 gateways or
instances, both ways to balance, cold starts after scaling to zero) and the summary is
consistent; the speed-ups themselves are measured by `make bench`. The revision parts (a
reload under the boutique's mix, a canary's share) run too, small, and must meet their goals of
correctness (no failed request, the share, nothing left after a rollback); latency is not judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import instances


@pytest.mark.node
@pytest.mark.slow
def test_instances_bench_runs_both_scenarios(tmp_path: Path, runtime_dir: Path) -> None:
    instances.main(["--transport", "unix", "--rounds", "1", "--seconds", "1", "--burst", "6", "--out", str(tmp_path),
                    "--only", "throughput", "--only", "cold_start"])
    (result,) = tmp_path.glob("instances-*.json")
    summary = json.loads(result.read_text())
    assert summary["cpu_rps"]["1"] > 0 and summary["cpu_rps"]["2"] > 0
    assert summary["gateways_rps"]["1"] > 0 and summary["gateways_rps"]["2"] > 0
    assert summary["cpu_ratio"] == round(summary["cpu_rps"]["2"] / summary["cpu_rps"]["1"], 2)
    for run in summary["runs"]["parking"].values():
        assert run[0]["wall_s"] > 0 and sum(run[0]["statuses"].values()) == 6
    for balance in ("round_robin", "least_in_flight"):
        (run,) = summary["runs"]["balance"][balance]
        assert run["rps"] > 0 and not any(run["errors"].values())
    (cold,) = summary["runs"]["cold_start"]["runs"]
    assert len(cold["cold_ms"]) == 3 and summary["cold_start"]["warm_ms"] > 0


@pytest.mark.node
@pytest.mark.slow
def test_instances_bench_runs_the_revision_parts(tmp_path: Path, runtime_dir: Path) -> None:
    instances.main(["--transport", "unix", "--rounds", "1", "--seconds", "1", "--only", "reload", "--only", "canary",
                    "--reload-seconds", "2", "--canary-requests", "200", "--out", str(tmp_path)])
    (result,) = tmp_path.glob("instances-revisions-*.json")
    summary = json.loads(result.read_text())
    (reload,) = summary["runs"]["reload"]["runs"]
    assert reload["reload_exit"] == 0 and reload["saturated_rps"] > 0 and not reload["old_workers_left"]
    windows = reload["windows"]
    assert windows["before"]["requests"] > 0 and windows["during"]["requests"] > 0
    assert not any(w["connection_errors"] for w in windows.values()), reload["error_samples"]
    assert len(reload["worker_ready_ms"]) == 10, "every new worker's start is logged"
    assert summary["reload"]["goal_no_failures"] in (True, False) and summary["reload"]["p99_ratio"] > 0
    (canary,) = summary["runs"]["canary"]["runs"]
    assert canary["statuses"] == {"200": 200} and canary["descriptors"]["canary"] > 0
    assert summary["canary"]["goal_share"] and summary["canary"]["goal_rollback_clean"]
    assert canary["roles_after_rollback"] == ["serving"]
