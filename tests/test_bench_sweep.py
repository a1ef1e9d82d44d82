"""bench.sweep runs end to end (a few requests a point) and writes its JSON and figure; the
figures themselves are measured by `python -m bench.sweep`, never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import sweep


@pytest.mark.node
@pytest.mark.slow
def test_sweep_writes_every_point_and_the_figure(tmp_path: Path, runtime_dir: Path) -> None:
    sweep.main(["--transports", "unix", "--requests", "20", "--out", str(tmp_path)])
    (result,) = json.loads((tmp_path / "sweep.json").read_text())
    assert result["transport"] == "unix"
    assert sorted(map(int, result["lengths"])) == list(sweep.LENGTHS)
    assert sorted(map(int, result["sizes"])) == list(sweep.SIZES)
    for point in [*result["lengths"].values(), *result["sizes"].values()]:
        assert 0 < point["p10"] <= point["p50"] <= point["p90"]
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
