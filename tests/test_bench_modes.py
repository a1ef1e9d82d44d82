"""bench.modes end to end at a tiny scale: the three ways to run the echo chain serve it and
each gets its figures; the figures themselves are in docs/deploy.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import modes


@pytest.mark.node
@pytest.mark.slow
@pytest.mark.kernel
def test_modes_bench_measures_three_ways(capsys: pytest.CaptureFixture[str], runtime_dir: Path) -> None:
    modes.main(["--rounds", "1", "--seconds", "1"])
    lines = capsys.readouterr().out.splitlines()
    figures = [re.fullmatch(r"(.+): ([\d,]+) req/s \(wrk -c16\), p50 (\d+) us \(wrk -c1\)", line) for line in lines]
    assert [f.group(1) for f in figures if f] == ["one node, skmsg", "one node, http", "knative mode: 4 nodes, http"]
    assert all(f and int(f.group(2).replace(",", "")) > 0 and int(f.group(3)) > 0 for f in figures)
