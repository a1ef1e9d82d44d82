"""bench.soak end to end at a tiny scale: its checks hold on a short run and it writes its
report (``make soak`` runs it for ten minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak


@pytest.mark.node
@pytest.mark.slow
def test_a_short_soak_passes_every_check_and_reports(tmp_path: Path, runtime_dir: Path) -> None:
    out = tmp_path / "soak.json"
    assert soak.main(["--minutes", "0.2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["requests"] > 100 and report["errors"] == 0
    assert all(report["checks"].values()) and len(report["checks"]) == 6
    assert report["timeline"] and report["after"]["fds"] > 0
