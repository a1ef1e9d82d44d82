"""Benchmark harness: baselines, spright apps under load and the runner (not part of ``make test``)."""
