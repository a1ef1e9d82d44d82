"""What ``spright stats`` prints: counters per function, readable in an 80-column terminal.

Large counts are abbreviated (``24.3M``, bytes as ``5.0G``), as ``docker stats`` and ``kn``
do; ``--json`` keeps the exact integers. With ``--watch`` the descriptor and byte columns
show rates per second instead of totals. The domain column appears only when the app has
more than one domain, and the data plane's own counters get a table of their own.
"""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table

# (header, key): the userspace counters every data plane keeps
COUNTERS = (("in", "descriptors_in"), ("out", "descriptors_out"), ("bytes", "payload_bytes"),
            ("err", "handler_errors"), ("calls", "calls"))
RATED = ("descriptors_in", "descriptors_out", "payload_bytes")  # shown per second with --watch
KERNEL_HEADERS = {"sent": "sent", "received": "recv", "dropped": "drop", "redirect_failed": "redir✗",
                  "domain_drops": "domain✗", "bad_route": "route✗"}
_UNITS = ("k", "M", "G", "T")


def compact(value: float) -> str:
    """At most four significant characters: 999, 24.3k, 123k, 1.2M, 5.0G."""
    if abs(value) < 9999.5:
        return f"{value:.0f}" if value == int(value) or abs(value) >= 99.95 else f"{value:.1f}"
    scaled, step = value / 1000, 0
    while abs(scaled) >= 999.5 and step < len(_UNITS) - 1:  # would round to 1000: the next unit up
        scaled, step = scaled / 1000, step + 1
    return f"{scaled:.1f}{_UNITS[step]}" if abs(scaled) < 99.95 else f"{scaled:.0f}{_UNITS[step]}"


def rates(current: dict[str, Any], previous: dict[str, Any], seconds: float) -> dict[str, dict[str, float]]:
    """Per-second rate of each counter per function name since ``previous``."""
    before = {f["id"]: f for f in previous["functions"]}
    out: dict[str, dict[str, float]] = {}
    for function in current["functions"]:
        old = before.get(function["id"], function)
        out[function["name"]] = {key: (function[key] - old[key]) / seconds for _, key in COUNTERS}
    return out


def stats_table(data: dict[str, Any], previous: dict[str, Any] | None, seconds: float) -> Group:
    """Userspace counters, then (when the data plane keeps them) the kernel's."""
    info = data["node"]
    responses = "  ".join(f"{cls} {compact(count)}" for cls, count in data["responses"].items() if count)
    title = f"{info['app']!r} — pid {info['pid']}, port {info['port']}, {info['transport']}"
    caption = f"gateway: {compact(data['requests'])} requests; responses {responses or 'none yet'}"
    domains = {f["domain"] for f in data["functions"] if f["id"]}
    counters = _named_table(title, data, with_domain=len(domains) > 1)
    per_second = rates(data, previous, seconds) if previous is not None and seconds > 0 else None
    for label, key in COUNTERS:
        if per_second is not None and key in RATED:
            counters.add_column(f"{label}/s", justify="right", style="cyan")
        else:
            counters.add_column(label, justify="right")
    counters.add_column("µs/run", justify="right", style="green")  # mean handler time
    scaled = any(f.get("instances_running", 1) > 1 for f in data["functions"]) or bool(data.get("scaling"))
    if scaled:
        counters.add_column("inst", justify="right", style="yellow")  # instances running now
    for function in data["functions"]:
        cells = [str(function["id"]), function["name"], *([function["domain"]] if len(domains) > 1 else [])]
        shown = per_second[function["name"]] if per_second is not None else {}
        cells += [compact(shown[key] if key in RATED and shown else function[key]) for _, key in COUNTERS]
        handled = function["handled"]
        cells.append(compact(function["handler_ns"] / handled / 1000) if handled else "-")
        if scaled:
            cells.append(str(function.get("instances_running", "")))
        counters.add_row(*cells)
    decisions = [*_revisions(data["functions"]), *_decisions(data.get("scaling", []))]
    kernel_keys = [k for k in dict.fromkeys(k for f in data["functions"] for k in f.get("kernel", {}))
                   if not k.startswith("bytes")]  # byte counts: --json and /metrics
    if not kernel_keys:
        counters.caption = f"{caption}; the {info['transport']} data plane keeps no kernel counters"
        return Group(counters, *decisions)
    counters.caption = caption
    kernel = _named_table(f"the {info['transport']} data plane's own counters", data, with_domain=False)
    for key in kernel_keys:
        kernel.add_column(KERNEL_HEADERS.get(key, key), justify="right", style="magenta")
    for function in data["functions"]:
        kernel.add_row(str(function["id"]), function["name"],
                       *(compact(function.get("kernel", {}).get(key, 0)) for key in kernel_keys))
    return Group(counters, kernel, *decisions)


def _revisions(functions: list[dict[str, Any]]) -> list[Table]:
    """A function's revisions side by side while it runs several (a canary, or one leaving):
    requests and calls handled, errors, mean handler time (none: no table)."""
    rows = [(function["name"], revision) for function in functions for revision in function.get("revisions", ())]
    if not rows:
        return []
    grid = Table(title="revisions", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("function", "rev", "role", "share", "handled", "err", "µs/run", "app"):
        grid.add_column(column, justify="left" if column in ("function", "role", "app") else "right")
    for name, revision in rows:
        handled = revision["handled"]
        share = f"{revision['share']}%" if revision["share"] is not None else ""
        grid.add_row(name, str(revision["revision"]), revision["role"], share, compact(handled),
                     compact(revision["handler_errors"]), compact(revision["handler_ns"] / handled / 1000) if handled
                     else "-", revision["app"])
    return [grid]


def _decisions(scaling: list[dict[str, Any]]) -> list[Table]:
    """The autoscaler's last five decisions, newest first (none: no table)."""
    if not scaling:
        return []
    grid = Table(title="autoscaler's last decisions", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("when", "function", "instances", "why"):
        grid.add_column(column, no_wrap=column != "why")
    for decision in reversed(scaling[-5:]):
        when = time.strftime("%H:%M:%S", time.localtime(decision["at"]))
        grid.add_row(when, decision["function"], f"{decision['from']} → {decision['to']}", decision["reason"])
    return [grid]


def _named_table(title: str, data: dict[str, Any], with_domain: bool) -> Table:
    grid = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    grid.add_column("id", justify="right")
    names = (("function", "name"), ("domain", "domain")) if with_domain else (("function", "name"),)
    for column, key in names:  # names stay whole
        grid.add_column(column, no_wrap=True, min_width=max(len(f[key]) for f in data["functions"]))
    return grid
