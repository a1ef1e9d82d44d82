"""bench.trace end to end at a tiny scale on the unix plane: every mode runs on a node of its
own, the export mode's spans reach the sink (and no other mode's do), and the breakdown reads
every service of the product page from the node's traces. What tracing costs is measured by
``python -m bench.trace``, never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import trace, trace_breakdown

PNG = b"\x89PNG\r\n\x1a\n"
PAGE_SERVICES = {"gateway", "frontend", "productcatalog", "currency", "cart", "recommendation", "ad"}


@pytest.mark.node
@pytest.mark.slow
def test_trace_bench_writes_its_figures_and_the_breakdown(tmp_path: Path, runtime_dir: Path) -> None:
    out, png = tmp_path / "trace.json", tmp_path / "breakdown.png"
    assert trace.main(["--duration", "1", "--rounds", "1", "--apps", "noop", "--transport", "unix",
                       "--requests", "30", "--loaded", "1", "--out", str(out), "--png", str(png)]) == out
    doc = json.loads(out.read_text())
    assert doc["machine"]["nproc"] > 0 and doc["apps"] == {"noop": "bench.apps:noop"}

    runs = doc["runs"]["noop"]
    assert set(runs) == set(trace.MODES)
    for mode, (run,) in runs.items():
        assert run["rps"] > 0 and run["cpu_us"] > 0 and run["p50_us"] <= run["p99_us"], mode
        assert run["stop"]["clean"] and run["load_1m"] >= 0, mode
        exporting = mode == "sample-1-export"
        assert (run["sink"]["spans"] > 0) == exporting, (mode, run["sink"])
    sink = runs["sample-1-export"][0]["sink"]
    assert sink["requests"] > 0 and sink["bytes"] > 0 and sink["refused"] == 0
    assert runs["sample-1-export"][0]["exported_share"] > 0

    summary = doc["summary"]["noop"]
    assert summary["off"]["rps_x_off"] == summary["off"]["cpu_us_x_off"] == 1
    for figures in summary.values():
        assert {"rps", "cpu_us", "p50_us", "p99_us", "rps_x_off", "cpu_us_x_off", "p99_us_x_off"} <= set(figures)

    breakdown = doc["breakdown"]
    assert breakdown["stop"]["clean"] and breakdown["requests"] == 30
    for part in (breakdown["serial"], breakdown["loaded"]):
        assert part["traces"] > 0 and part["page_us"] > 0
        assert set(part["services"]) >= PAGE_SERVICES
        for name, figures in part["services"].items():
            assert set(figures) == set(trace_breakdown.FIELDS) and all(v >= 0 for v in figures.values()), name
        assert part["services"]["productcatalog"]["runs"] > 1  # the product, and the recommended ones
    assert breakdown["loaded"]["rps"] > 0 and breakdown["loaded"]["errors"] == 0
    assert doc["png"] == str(png) and png.read_bytes()[:8] == PNG
