"""Shared bits of the apps' load tools: loopback-only targets and latency summaries."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def require_loopback(url: str) -> str:
    """The tools generate bursts of traffic: they only ever aim at this machine."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"refusing {url}: load tools only target this machine (127.0.0.1, ::1 or localhost)")
    return url.rstrip("/")


def summary(seconds: list[float]) -> dict[str, float | int]:
    """Count and latency percentiles in milliseconds."""
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 3)

    return {"count": len(ordered), "mean_ms": round(sum(ordered) / len(ordered) * 1000, 3), "p50_ms": pct(50),
            "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": round(ordered[-1] * 1000, 3)}
