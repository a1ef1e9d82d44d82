"""bench.paper runs every phase end to end on the unix plane at a tiny scale and writes consistent
figures; the comparisons themselves are measured by `make bench`, never asserted here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import figures, paper

PNG = b"\x89PNG\r\n\x1a\n"


def check_cpu(cpu: dict[str, Any]) -> None:
    assert cpu["t"] and len(cpu["t"]) == len(cpu["cores"])
    assert cpu["cpu_seconds"] > 0 and all(c >= 0 for c in cpu["cores"])


def check_latency(latency: dict[str, Any]) -> None:
    assert latency["count"] > 0
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]


@pytest.mark.node
@pytest.mark.slow
def test_paper_writes_every_figure(tmp_path: Path, runtime_dir: Path) -> None:
    paper.main(["--quick", "--planes", "unix", "--scale", "0.25", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "results.json").read_text())
    figs = doc["figures"]
    runs = {name: fig["runs"]["unix"] for name, fig in figs.items()}
    for name, run in runs.items():
        assert "skipped" not in run and "error" not in run, (name, run)
        assert run["stop"]["clean"], (name, run["stop"])

    assert runs["fig9"]["rps"] > 0 and runs["fig9"]["requests"] > 0
    assert runs["fig9"]["errors"] == 0, runs["fig9"].get("error_kinds")
    check_cpu(runs["fig9"]["cpu"])

    # the open-loop rate is half the saturated one: low enough for no errors and every kind of the mix
    fig10, open_run = figs["fig10"], runs["fig10"]
    assert fig10["rate"] == pytest.approx(runs["fig9"]["rps"] / 2)
    assert open_run["errors"] == 0 and open_run["unfinished"] == 0 and open_run["requests"] > 0
    assert open_run["achieved_rps"] > 0
    assert {"GET /", "GET /product/{id}"} <= set(open_run["kinds"])
    for kind in open_run["kinds"].values():
        check_latency(kind)
        assert kind["cdf_ms"] == sorted(kind["cdf_ms"])
    check_latency(open_run["latency"])
    check_cpu(open_run["cpu"])
    assert open_run["cpu"]["cpu_s_per_1k_requests"] > 0

    motion = runs["fig11"]
    assert motion["events"] > 0 and motion["errors"] == 0 and motion["cdf_ms"]
    check_latency(motion["latency"])
    check_cpu(motion["cpu"])
    assert motion["idle"]["t"] and motion["idle"]["mean_cores"] >= 0

    parking = runs["fig12"]
    assert parking["requests"] == figs["fig12"]["burst"] * figs["fig12"]["bursts"]
    assert all(int(code) < 500 for code in parking["statuses"])
    check_cpu(parking["cpu"])

    echo = runs["echo3"]
    assert echo["saturated"]["rps"] > 0 and echo["saturated"]["p50_us"] <= echo["saturated"]["p99_us"]
    assert echo["low_load"]["errors"] == 0 and echo["low_load"]["requests"] > 0
    check_latency(echo["low_load"]["latency"])
    assert echo["low_load"]["cpu"]["cpu_s_per_1k_requests"] > 0

    sweep = runs["sweep"]
    assert len(sweep["lengths"]) == 10 and len(sweep["sizes"]) == 4
    for point in [*sweep["lengths"].values(), *sweep["sizes"].values()]:
        assert 0 < point["p10"] <= point["p50"] <= point["p90"]

    assert {g["goal"] for g in doc["goals"]} and all(g["met"] is None for g in doc["goals"])  # no skmsg here
    assert doc["commands"] and doc["machine"]["nproc"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## Goals" in summary and "Fig 10" in summary
    for name in figures.PNGS:
        assert (tmp_path / name).read_bytes()[:8] == PNG, name


def test_unknown_plane_is_refused() -> None:
    with pytest.raises(SystemExit):
        paper.parse(["--planes", "skmsg,nope"])


@pytest.mark.node
def test_a_plane_that_does_not_start_is_skipped_everywhere(tmp_path: Path, runtime_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(paper.PLANES, "bogus", ["--transport", "bogus"])
    paper.main(["--quick", "--planes", "bogus", "--scale", "0.25", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "results.json").read_text())
    assert "unknown transport" in doc["unavailable"]["bogus"]
    for fig in doc["figures"].values():
        assert "unknown transport" in fig["runs"]["bogus"]["skipped"]
    assert len(doc["commands"]) == 1  # tried once, then skipped without another start
    assert "skipped: " in (tmp_path / "summary.md").read_text()
    for name in figures.PNGS:
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
