"""bench.streaming end to end at a tiny scale, so it cannot rot: every part runs (time to first
byte beside echo3, downloads decoded byte-exact with the node's memory sampled, SSE streams
checked in order), the result renders into docs/performance.md's table, and correctness goals
hold (every byte and event, nothing left in the pool); speed is not judged here (the figures
are bench.streaming's own run, in docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report, streaming


def test_percentiles_scale_and_ranks() -> None:
    figures = streaming.percentiles([i * 1000 for i in range(1, 101)])  # 1..100 µs
    assert (figures["p50"], figures["p99"], figures["max"]) == (51, 100, 100)
    assert streaming.percentiles([]) == {"count": 0}


@pytest.mark.node
@pytest.mark.slow
def test_streaming_bench_runs_every_part(tmp_path: Path, runtime_dir: Path) -> None:
    streaming.main(["--transport", "unix", "--samples", "20", "--sizes", "2,6", "--warmup-mib", "1", "--kib", "256",
                    "--clients", "20", "--rate", "20", "--seconds", "0.5", "--client-procs", "2", "--max-load", "1000",
                    "--out", str(tmp_path)])
    (path,) = tmp_path.glob("streaming-*.json")
    run = json.loads(path.read_text())
    assert run["ttfb"]["echo3_us"]["count"] == run["ttfb"]["first_part_us"]["count"] == 20
    assert [r["mib"] for r in run["download"]] == [1, 2, 6]
    for r in run["download"]:
        assert r["exact"] and r["chunk_sizes"] == [256 << 10] and r["memory_peak"]["rss"] > 0
        assert r["slots_in_use_after"] == 0
    sse = run["sse"]
    assert (sse["clients"], sse["expected"], sse["received"], sse["complete"]) == (20, 200, 200, 20)
    assert not sse["out_of_order"] and not sse["problems"] and sse["delay_ms"]["count"] == 200
    checks = run["checks"]
    assert checks["every download byte-exact, one chunk per part"] and checks["no slot in use after the downloads"]
    assert checks["every SSE event delivered, in order, every stream complete"]
    assert "| echo3, whole answer (baseline) |" in report.render(path)
