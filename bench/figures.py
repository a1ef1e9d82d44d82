"""``bench.paper``'s output: results.json, the paper-shaped PNGs and summary.md with its goals.

Kept apart from the runner so a stored run can be re-rendered without re-measuring:
``python -m bench.figures bench/results/<stamp>/results.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter

from bench import sweep

PNGS = ("fig9.png", "fig10.png", "fig11.png", "fig12.png", "sweep.png")
# one colour per plane in every figure, whichever order a phase ran the planes in
COLOURS = {plane: f"C{i}" for i, plane in enumerate(("skmsg", "poll", "poll-adaptive", "knative", "grpc", "http",
                                                      "unix", "knative-sidecar"))}
Run = dict[str, Any]


def ok(run: Run) -> bool:
    return "skipped" not in run and "error" not in run


def status(run: Run) -> str | None:
    """Why a run has no figures, or None."""
    if "skipped" in run:
        return f"skipped: {run['skipped']}"
    if "error" in run:
        return f"error: {run['error']}"
    return None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


# ---------------------------------------------------------------------------------- plots ----
def _cdf(axes: Axes, label: str, points: list[float]) -> None:
    if points:
        axes.plot(points, [(i + 1) / len(points) for i in range(len(points))], label=label, color=COLOURS.get(label))
        axes.set(xscale="log", ylabel="CDF")
        axes.xaxis.set_minor_formatter(NullFormatter())  # 2x10^0 ... labels overlap on a narrow panel


def _cpu(axes: Axes, label: str, cpu: dict[str, Any]) -> None:
    axes.plot(cpu.get("t", []), cpu.get("cores", []), label=label, color=COLOURS.get(label))


def _finish(figure: Any, path: Path, *axes: Axes) -> None:
    for a in axes:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def plot_fig9(fig: dict[str, Any], path: Path) -> None:
    figure, axes = pyplot.subplots(figsize=(6, 4))
    runs, substituted = fig["runs"], fig.get("substituted", {})
    values = [runs[p].get("rps", 0) if ok(runs[p]) else 0 for p in runs]
    labels = [f"{p}\n(as {substituted[p]})" if p in substituted else p for p in runs]
    bars = axes.bar(labels, values, color=[COLOURS.get(p, "C7") for p in runs])
    axes.set_ylim(0, max(values, default=0) * 1.15 or 1)
    for bar, plane in zip(bars, runs, strict=True):
        note = "skipped" if "skipped" in runs[plane] else f"{runs[plane].get('errors', 0)} err"
        axes.annotate(f"{bar.get_height():,.0f}\n{note}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=7)
    axes.set(title=f"Online Boutique at saturation (upstream's mix, wrk -c{fig['users']})", ylabel="requests/s")
    _finish(figure, path, axes)


def plot_fig10(fig: dict[str, Any], path: Path) -> None:
    runs = {p: r for p, r in fig["runs"].items() if ok(r)}
    kinds = sorted({k for r in runs.values() for k in r.get("kinds", {})})
    columns = 4
    rows = (len(kinds) + 1 + columns - 1) // columns
    figure, grid = pyplot.subplots(rows, columns, figsize=(14, 3.2 * rows), squeeze=False)
    panels = list(grid.flat)
    for axes, kind in zip(panels, kinds, strict=False):
        for plane, run in runs.items():
            _cdf(axes, plane, run["kinds"].get(kind, {}).get("cdf_ms", []))
        axes.set(title=kind, xlabel="ms (from scheduled send)")
    cpu_axes = panels[len(kinds)]
    for plane, run in runs.items():
        _cpu(cpu_axes, plane, run["cpu"])
    cpu_axes.set(title="CPU cores in use", xlabel="s", ylabel="cores")
    for axes in panels[len(kinds) + 1:]:
        axes.axis("off")
    figure.suptitle(f"Online Boutique, open loop at {fig.get('rate', 0):,.0f} req/s for every plane")
    _finish(figure, path, *panels[:len(kinds) + 1])


def plot_fig11(fig: dict[str, Any], path: Path) -> None:
    figure, (latency, cpu) = pyplot.subplots(1, 2, figsize=(11, 4))
    for plane, run in fig["runs"].items():
        if ok(run):
            _cdf(latency, plane, run["cdf_ms"])
            busy, idle = run["cpu"], run["idle"]
            _cpu(cpu, plane, busy)
            end = busy["t"][-1] if busy["t"] else 0.0
            cpu.plot([t + end for t in idle["t"]], idle["cores"], color=COLOURS.get(plane), linestyle="--")
    latency.set(title="motion: event latency", xlabel="ms")
    cpu.set(title=f"CPU cores in use: the trace x{fig['speed']:.0f}, then idle {fig['idle_s']} s (dashed)",
            xlabel="s", ylabel="cores")
    _finish(figure, path, latency, cpu)


def plot_fig12(fig: dict[str, Any], path: Path) -> None:
    figure, (latency, cpu) = pyplot.subplots(1, 2, figsize=(11, 4))
    runs = {p: r for p, r in fig["runs"].items() if ok(r)}
    width = 0.8 / 3
    for i, pct in enumerate(("p50_ms", "p90_ms", "p99_ms")):
        latency.bar([j + i * width for j in range(len(runs))], [r["route2"].get(pct, 0) for r in runs.values()],
                    width, label=pct.replace("_ms", ""))
    latency.set_xticks([j + width for j in range(len(runs))], list(runs))
    for plane, run in runs.items():
        _cpu(cpu, plane, run["cpu"])
    latency.set(title=f"parking route 2: bursts of {fig['burst']} photos", ylabel="ms")
    cpu.set(title="CPU cores in use", xlabel="s", ylabel="cores")
    _finish(figure, path, latency, cpu)


def points(run: Run) -> Run:
    """A sweep run with its x values as numbers again (JSON made them strings)."""
    return {**run, "lengths": {int(k): v for k, v in run["lengths"].items()},
            "sizes": {int(k): v for k, v in run["sizes"].items()}}


def plot_sweep(fig: dict[str, Any], path: Path) -> None:
    complete = [points(r) for r in fig["runs"].values() if ok(r)]
    if complete:
        sweep.plot(complete, path)
        return
    figure, axes = pyplot.subplots(figsize=(6, 3))
    axes.text(0.5, 0.5, "no data plane completed the sweep", ha="center")
    _finish(figure, path)


# ---------------------------------------------------------------------------------- goals ----
def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def goals(figs: dict[str, Any], nproc: int) -> list[dict[str, Any]]:
    """Each goal: measured ratio, target, met (None when a plane is missing), and why."""
    def get(fig: str, plane: str, *keys: str) -> float | None:
        value: Any = figs[fig]["runs"].get(plane)
        if value is None or not ok(value):
            return None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def missing(fig: str, *planes: str) -> str:
        runs = figs[fig]["runs"]
        return "; ".join(f"{p}: {status(runs[p]) if p in runs else 'not in --planes'}" for p in planes
                         if p not in runs or not ok(runs[p]))

    out = []

    def goal(name: str, fig: str, planes: tuple[str, ...], value: float | None, target: str,
             test: Callable[[float], bool], spec: str = ".2f") -> None:
        why = missing(fig, *planes) or ("" if value is not None else "no figure measured")
        out.append({"goal": name, "measured": None if value is None else round(value, 4),
                    "shown": "-" if value is None else format(value, spec), "target": target,
                    "met": None if value is None else test(value), "reason": why})

    rps = ("rps",)
    goal("Boutique saturated RPS: skmsg / knative", "fig9", ("skmsg", "knative"),
         _ratio(get("fig9", "skmsg", *rps), get("fig9", "knative", *rps)), "≥ 6", lambda v: v >= 6)
    goal("Boutique saturated RPS: skmsg / grpc", "fig9", ("skmsg", "grpc"),
         _ratio(get("fig9", "skmsg", *rps), get("fig9", "grpc", *rps)), "≥ 3", lambda v: v >= 3)
    goal("Boutique same load p99: skmsg / knative", "fig10", ("skmsg", "knative"),
         _ratio(get("fig10", "skmsg", "latency", "p99_ms"), get("fig10", "knative", "latency", "p99_ms")),
         "≤ 0.05", lambda v: v <= 0.05, ".3f")
    per_k = ("cpu", "cpu_s_per_1k_requests")
    goal("Boutique same load CPU per request: skmsg / knative", "fig10", ("skmsg", "knative"),
         _ratio(get("fig10", "skmsg", *per_k), get("fig10", "knative", *per_k)), "≤ 0.05", lambda v: v <= 0.05, ".3f")
    goal("echo3 saturated RPS: skmsg / poll", "echo3", ("skmsg", "poll"),
         _ratio(get("echo3", "skmsg", "saturated", "rps"), get("echo3", "poll", "saturated", "rps")),
         "0.8 to 1.2", lambda v: 0.8 <= v <= 1.2)
    if "poll-adaptive" in figs["echo3"]["runs"]:
        goal("echo3 saturated RPS: skmsg / poll-adaptive", "echo3", ("skmsg", "poll-adaptive"),
             _ratio(get("echo3", "skmsg", "saturated", "rps"), get("echo3", "poll-adaptive", "saturated", "rps")),
             "0.8 to 1.2", lambda v: 0.8 <= v <= 1.2)
    low = ("low_load", "cpu", "cpu_s_per_1k_requests")
    goal("echo3 CPU per request at 10% load: skmsg / poll", "echo3", ("skmsg", "poll"),
         _ratio(get("echo3", "skmsg", *low), get("echo3", "poll", *low)), "≤ 0.33", lambda v: v <= 1 / 3, ".3f")
    goal("motion idle: skmsg cores in use", "fig11", ("skmsg",), get("fig11", "skmsg", "idle", "mean_cores"),
         "≤ 0.01", lambda v: v <= 0.01, ".4f")
    processes = get("fig11", "poll", "processes")
    busy = min(int(processes), nproc) if processes else nproc
    goal(f"motion idle: poll cores in use (≈ one per poller, at most {nproc} here)", "fig11", ("poll",),
         get("fig11", "poll", "idle", "mean_cores"), f"≥ {0.8 * busy:.1f}", lambda v: v >= 0.8 * busy)
    size_ratios = {}
    for plane in ("skmsg", "http", "knative"):
        run = figs["sweep"]["runs"].get(plane)
        sizes = points(run)["sizes"] if run and ok(run) else {}
        small, big = sizes.get(sweep.SIZES[0]), sizes.get(sweep.SIZES[-1])
        size_ratios[plane] = _ratio(big["p50"], small["p50"]) if small and big else None
    goal("1 MB / 1 KB latency through 5 hops: skmsg", "sweep", ("skmsg",), size_ratios["skmsg"], "≤ 1.5",
         lambda v: v <= 1.5)
    run = figs["sweep"]["runs"].get("skmsg")
    one_hop = run.get("one_hop", {}).get(str(sweep.SIZES[-1])) if run and ok(run) else None
    five = points(run)["sizes"].get(sweep.SIZES[-1]) if run and ok(run) else None
    goal("(why) 1 MB through 5 hops / through 1 hop: skmsg, the hops' share", "sweep", ("skmsg",),
         _ratio(five["p50"], one_hop["p50"]) if five and one_hop else None, "≤ 1.5", lambda v: v <= 1.5)
    carrier = "http" if size_ratios["http"] is not None else "knative"  # both carry the payload every hop
    goal(f"1 MB / 1 KB latency through 5 hops: {carrier} (grows with size)", "sweep", (carrier,),
         size_ratios[carrier], "> 1.5", lambda v: v > 1.5)
    return out


# -------------------------------------------------------------------------------- summary ----
def markdown(doc: dict[str, Any]) -> str:
    figs, meta, cfg = doc["figures"], doc["machine"], doc["config"]
    lines = [f"# bench.paper {'(quick)' if cfg['quick'] else ''}", "",
             f"{meta['nproc']} CPUs ({meta['cpu']}), kernel {meta['kernel']}, Python {meta['python']}, "
             f"{meta['date']}, commit {meta['commit']}{' (dirty)' if meta['dirty'] else ''}; "
             f"{doc['wall_seconds']:.0f} s in all. Planes: "
             + ", ".join(f"`{p}` = `{' '.join(a)}`" for p, a in doc["planes"].items()) + ".",
             "CPU is the whole deployment's (every process of the node's tree, from /proc); clients share the "
             "same cores.", ""]

    def section(title: str, fig: dict[str, Any], header: list[str], row: Callable[[Run], list[str]]) -> None:
        rows = [[plane, *(row(run) if ok(run) else [status(run) or "", *[""] * (len(header) - 2)])]
                for plane, run in fig["runs"].items()]
        lines.extend([f"## {title}", "", *_table(header, rows), ""])

    f9 = figs["fig9"]
    note = "".join(f" `{p}` ran as `{q}` (eleven spinning pollers on 2 cores)." for p, q in f9["substituted"].items())
    section(f"Fig 9: Online Boutique at saturation (upstream's mix, `wrk -c{f9['users']}`, {f9['seconds']} s).{note}",
            f9,
            ["plane", "RPS", "requests", "errors", "mean cores", "CPU s / 1k req"],
            lambda r: [_num(r["rps"]), _num(r["requests"]), _num(r["errors"]), _num(r["cpu"]["mean_cores"], ".2f"),
                       _num(r["cpu"].get("cpu_s_per_1k_requests"), ".3f")])
    f10 = figs["fig10"]
    section(f"Fig 10: Online Boutique, open loop at {f10.get('rate', 0):,.1f} req/s ({f10.get('rate_from', '-')}), "
            f"{f10['seconds']} s, Poisson arrivals, latency from the scheduled send", f10,
            ["plane", "achieved RPS", "requests", "errors", "p50", "p99", "mean cores", "CPU s / 1k req"],
            lambda r: [_num(r["achieved_rps"], ",.1f"), _num(r["requests"]), _num(r["errors"]),
                       _ms(r["latency"].get("p50_ms")), _ms(r["latency"].get("p99_ms")),
                       _num(r["cpu"]["mean_cores"], ".2f"), _num(r["cpu"].get("cpu_s_per_1k_requests"), ".3f")])
    f11 = figs["fig11"]
    section(f"Fig 11: motion, the sample trace at x{f11['speed']:.0f} (~{f11['seconds']} s), then "
            f"{f11['idle_s']} s idle", f11,
            ["plane", "events", "errors", "p50", "p99", "after idle p50", "idle cores", "busy mean cores", "processes"],
            lambda r: [_num(r["events"]), _num(r["errors"]), _ms(r["latency"].get("p50_ms")),
                       _ms(r["latency"].get("p99_ms")), _ms(r["after_idle"].get("p50_ms")),
                       _num(r["idle"]["mean_cores"], ".3f"), _num(r["cpu"]["mean_cores"], ".2f"),
                       _num(r["processes"])])
    f12 = figs["fig12"]
    section(f"Fig 12: parking, {f12['bursts']} bursts of {f12['burst']} photo POSTs every {f12['every_s']} s", f12,
            ["plane", "requests", "statuses", "route2 p50", "route2 p99", "route1 p50", "mean cores", "CPU s / 1k req"],
            lambda r: [_num(r["requests"]), json.dumps(r["statuses"]), _ms(r["route2"].get("p50_ms")),
                       _ms(r["route2"].get("p99_ms")), _ms(r["route1"].get("p50_ms")),
                       _num(r["cpu"]["mean_cores"], ".2f"), _num(r["cpu"].get("cpu_s_per_1k_requests"), ".3f")])
    echo = figs["echo3"]
    section(f"echo3 (3 hops, {echo['body_bytes']} B POST): wrk -c64 {echo['seconds']} s, then open loop at "
            f"{echo.get('rate', 0):,.0f} req/s ({echo.get('rate_from', '-')})", echo,
            ["plane", "saturated RPS", "p99", "low-load achieved RPS", "errors", "p50", "p99", "CPU s / 1k req"],
            lambda r: [_num(r["saturated"]["rps"]), _ms(r["saturated"]["p99_us"] / 1000),
                       _num(r["low_load"].get("achieved_rps")), _num(r["low_load"].get("errors")),
                       _ms(r["low_load"].get("latency", {}).get("p50_ms")),
                       _ms(r["low_load"].get("latency", {}).get("p99_ms")),
                       _num(r["low_load"].get("cpu", {}).get("cpu_s_per_1k_requests"), ".3f")])
    sw = figs["sweep"]

    def sweep_row(r: Run) -> list[str]:
        r = points(r)
        one, ten = r["lengths"][1], r["lengths"][10]
        small, big = r["sizes"][sweep.SIZES[0]], r["sizes"][sweep.SIZES[-1]]
        single = r.get("one_hop", {}).get(str(sweep.SIZES[-1]))
        return [_ms(one["p50"] * 1e3), _ms(ten["p50"] * 1e3), f"{(ten['p50'] - one['p50']) / 9 * 1e6:.0f} µs",
                _ms(small["p50"] * 1e3), _ms(big["p50"] * 1e3), f"{big['p50'] / small['p50']:.2f}x",
                _ms(single["p50"] * 1e3) if single else "-",
                f"{big['p50'] / single['p50']:.2f}x" if single else "-"]

    note = "".join(f" `{p}` ran as `{q}`." for p, q in sw.get("substituted", {}).items())
    section(f"Sweep: one request at a time, {sw['requests']} a point (p50).{note}", sw,
            ["plane", "1 hop", "10 hops", "per hop", f"{sw['hops']} hops 1 KB", f"{sw['hops']} hops 1 MB",
             "1 MB / 1 KB", "1 hop 1 MB", f"1 MB: {sw['hops']} hops / 1"], sweep_row)
    rows = [[g["goal"], g["shown"], g["target"], {True: "yes", False: "no", None: "-"}[g["met"]], g["reason"]]
            for g in doc["goals"]]
    lines += ["## Goals (ratios within this run)", "", *_table(["goal", "measured", "target", "met", "reason"], rows)]
    if doc["unavailable"]:
        lines += ["", "Planes whose node did not start: "
                  + "; ".join(f"`{p}`: {why}" for p, why in doc["unavailable"].items()) + "."]
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], out: Path) -> None:
    """results.json, the five PNGs and summary.md into ``out``."""
    doc = json.loads(json.dumps(doc))  # render what a redraw from results.json would see (string keys)
    figs = doc["figures"]
    doc["goals"] = goals(figs, doc["machine"]["nproc"])
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    plot_fig9(figs["fig9"], out / "fig9.png")
    plot_fig10(figs["fig10"], out / "fig10.png")
    plot_fig11(figs["fig11"], out / "fig11.png")
    plot_fig12(figs["fig12"], out / "fig12.png")
    plot_sweep(figs["sweep"], out / "sweep.png")
    (out / "summary.md").write_text(markdown(doc))


if __name__ == "__main__":
    stored = Path(sys.argv[1])  # a results.json (bench/results/latest/ keeps none: too big)
    write(json.loads(stored.read_text()), stored.parent)
