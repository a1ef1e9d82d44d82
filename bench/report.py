"""Derived figures and the README table. Kept apart from the runner so a stored results JSON can
be re-rendered (``python -m bench.report bench/results/latest.json``) without re-measuring."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

HOPS_BETWEEN_NOOP_AND_CHAIN10 = 9
PER_HOP_FORMULA = (
    "per-hop cost = (chain10 latency - noop latency) / 9 at wrk -c1: both chains start at the gateway "
    "and end with the same 'hello' function; chain10 adds nine pass-through hops, so the difference "
    "is nine hops' worth of descriptor send + wake-up + handler, with the HTTP part cancelled out."
)


def _ok(result: dict[str, Any]) -> bool:
    return "error" not in result and "load" in result


def derive(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios against the raw server of the same run, and per-hop costs per transport."""
    raws = [r["load"]["rps"] for r in results if r["scenario"] == "raw" and _ok(r)]
    raw_rps = max(raws) if raws else None  # noise only ever slows a run: the faster raw run is the truer ceiling
    derived: dict[str, Any] = {"raw_rps_reference": raw_rps, "raw_rps_runs": raws, "ratios_vs_raw": {}, "per_hop": {}}
    if len(raws) == 2:
        derived["raw_drift_percent"] = round(100 * (raws[1] - raws[0]) / raws[0], 1)
    for r in results:
        if _ok(r) and raw_rps and r["scenario"] != "raw":
            key = f"{r['scenario']}_{r['transport']}_rps_over_raw"
            derived["ratios_vs_raw"][key] = r["ratio_vs_raw"] = round(r["load"]["rps"] / raw_rps, 3)
    by_key = {(r["scenario"], r["transport"]): r for r in results if _ok(r)}
    chains = (("chain10", ""), ("chain10_shared", ", hops in one process"))
    transports = sorted({r["transport"] for r in results if r["scenario"] == "chain10"})
    for transport, (scenario, where) in itertools.product(transports, chains):
        noop, chain = by_key.get(("noop", transport)), by_key.get((scenario, transport))
        if not noop or not chain or "low_load" not in noop or "low_load" not in chain:
            continue
        n = HOPS_BETWEEN_NOOP_AND_CHAIN10
        lo_noop, lo_chain = noop["low_load"], chain["low_load"]
        derived["per_hop"][transport + where] = {
            "low_load_p50_us": round((lo_chain["p50_us"] - lo_noop["p50_us"]) / n, 1),
            "low_load_mean_us": round((lo_chain["mean_us"] - lo_noop["mean_us"]) / n, 1),
            "cpu_us_per_request": round((chain["cpu_us_per_request"] - noop["cpu_us_per_request"]) / n, 1),
            "formula": PER_HOP_FORMULA,
        }
    return derived


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f} ms"


def markdown(doc: dict[str, Any]) -> str:
    meta, derived = doc["machine"], doc["derived"]
    cfg = doc["config"]
    lines = [
        f"Load: `wrk -t1 -c{cfg['connections']} -d{cfg['duration']}s`, {meta['nproc']} CPUs, kernel {meta['kernel']}, "
        f"Python {meta['python']} ({meta.get('interpreter', '?')}), {meta['date']}. "
        "Client and servers share the machine; CPU is the servers' "
        "utime+stime (all processes) per completed request.",
        "",
        "| scenario | transport | RPS | vs raw | p50 | p99 | CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        if not _ok(r):
            lines.append(f"| {r['label']} | {r['transport']} | failed | | | | |")
            continue
        load = r["load"]
        reference = derived["raw_rps_reference"]
        if r["scenario"] == "raw" and reference:
            r["ratio_vs_raw"] = round(load["rps"] / reference, 3)  # the slower raw run shows its own shortfall
        ratio = f"{r['ratio_vs_raw']:.2f}" if "ratio_vs_raw" in r else "-"
        errors = sum(load["errors"].values())
        rps = f"{load['rps']:,.0f}" + (f" ({errors} errors)" if errors else "")
        lines.append(
            f"| {r['label']} | {r['transport']} | {rps} | {ratio} | {_ms(load['p50_us'])} | {_ms(load['p99_us'])} "
            f"| {r['cpu_us_per_request']:.0f} |"
        )
    low = [r for r in doc["results"] if _ok(r) and "low_load" in r]
    if low:
        lines += ["", f"Low load (`wrk -t1 -c1 -d{cfg['low_load_duration']}s`):", "",
                  "| scenario | transport | RPS | p50 | p99 |", "|---|---|---:|---:|---:|"]
        for r in low:
            lo = r["low_load"]
            lines.append(f"| {r['label']} | {r['transport']} | {lo['rps']:,.0f} | {_ms(lo['p50_us'])} "
                         f"| {_ms(lo['p99_us'])} |")
    for transport, hop in derived["per_hop"].items():
        lines += ["", f"Per-hop cost ({transport}): {hop['low_load_p50_us']:.1f} µs at low load (p50; "
                  f"{hop['low_load_mean_us']:.1f} µs by mean), {hop['cpu_us_per_request']:.1f} µs CPU under load."]
    if derived["per_hop"]:
        lines += ["", f"_{PER_HOP_FORMULA}_"]
    others = [r["other_cores_busy"] for r in doc["results"] if _ok(r) and "other_cores_busy" in r]
    if others:
        low, high = max(min(others), 0), max(others)
        lines += ["", f"Noise: processes other than the server and wrk used {low:.2f} to {high:.2f} "
                  f"of {meta['nproc']} cores during the loaded runs (from /proc/stat)."]
    if "raw_drift_percent" in derived:
        lines += ["", f"Raw server measured first and last: {derived['raw_drift_percent']:+.1f}% drift; "
                  "ratios use the faster of the two."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # python -m bench.report [RESULTS.json] [--write]: re-derive and re-render a stored run
    # (--write also updates that file and writes latest.md beside it)
    paths = [a for a in sys.argv[1:] if a != "--write"]
    path = Path(paths[0] if paths else "bench/results/latest.json")
    doc = json.loads(path.read_text())
    doc["derived"] = derive(doc["results"])
    table = markdown(doc)
    if "--write" in sys.argv:
        path.write_text(json.dumps(doc, indent=2))
        (path.parent / "latest.md").write_text(table)
    sys.stdout.write(table)
