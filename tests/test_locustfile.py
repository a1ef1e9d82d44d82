"""apps/online_boutique/locustfile.py drives a real node with Locust, as upstream's load
generator drives the shop: every request kind of the mix is served, none fails."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spright.testing import run_node

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed")]
LOCUSTFILE = Path(__file__).resolve().parent.parent / "apps" / "online_boutique" / "locustfile.py"


def test_locust_runs_upstreams_mix_against_the_shop(tmp_path: Path, runtime_dir: Path) -> None:
    with run_node("apps.online_boutique:app", transport="unix") as (port, _):
        # no think time here (upstream waits 1-10 s between tasks): a few seconds must see every task
        override = tmp_path / "fast.py"
        override.write_text(f"from locust import constant\nimport runpy\n"
                            f"ns = runpy.run_path({str(LOCUSTFILE)!r})\n"
                            f"class FastShopper(ns['WebsiteUser']):\n    wait_time = constant(0)\n")
        result = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(override), "--headless", "-u", "8", "-r", "8", "-t", "6s",
             "--host", f"http://127.0.0.1:{port}", "--csv", str(tmp_path / "run"), "--only-summary"],
            capture_output=True, text=True, timeout=60, cwd=LOCUSTFILE.parents[2],
            env={**os.environ, "PYTHONPATH": str(LOCUSTFILE.parents[2])},
        )
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    total = rows.pop(("", "Aggregated"))
    counts = {key: int(row["Request Count"]) for key, row in rows.items()}
    assert set(counts) >= {("GET", "/"), ("POST", "/setCurrency"), ("GET", "/product/{id}"), ("GET", "/cart"),
                           ("POST", "/cart"), ("POST", "/cart/checkout")}, counts
    assert int(total["Failure Count"]) == 0, (tmp_path / "run_failures.csv").read_text()
    assert max(counts, key=counts.__getitem__) == ("GET", "/product/{id}"), "browseProduct weighs 10 of 19"
