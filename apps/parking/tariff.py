"""The car park's tariff: time bands, a grace period, a daily cap and discounts, in exact money.

A stay is cut at every band boundary and at midnight (UTC); each piece costs its band's hourly
rate pro rata to the second; each calendar day is rounded up to the cent and capped; discounts
(permit holders, electric vehicles) apply to the total. Stays within the grace period are free.
Amounts are integer cents computed with Fractions: no float ever touches money.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

UTC = dt.UTC


@dataclass(frozen=True)
class Band:
    """``start_hour`` ≤ hour < ``end_hour`` costs ``cents_per_hour`` (hours 0..24, no wrap)."""

    start_hour: int
    end_hour: int
    cents_per_hour: int


@dataclass(frozen=True)
class Tariff:
    currency: str = "GBP"
    grace_seconds: int = 10 * 60
    bands: tuple[Band, ...] = (Band(0, 7, 100), Band(7, 19, 300), Band(19, 24, 150))
    daily_cap_cents: int = 2000
    discounts: dict[str, Fraction] = field(default_factory=lambda: {"permit": Fraction(1, 2), "ev": Fraction(1, 5)})

    def __post_init__(self) -> None:
        hours = [h for band in self.bands for h in (band.start_hour, band.end_hour)]
        if hours[0] != 0 or hours[-1] != 24 or any(a != b for a, b in zip(hours[1:-1:2], hours[2::2], strict=True)):
            raise ValueError("tariff bands must cover 0..24 h back to back")


DEFAULT = Tariff()


def format_cents(cents: int, currency: str = "GBP") -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


def _days(entry: dt.datetime, exit_: dt.datetime) -> list[tuple[dt.date, dt.datetime, dt.datetime]]:
    """The stay split at midnights: (day, start, end) per calendar day touched."""
    pieces = []
    start = entry
    while start < exit_:
        midnight = dt.datetime.combine(start.date() + dt.timedelta(days=1), dt.time(), UTC)
        end = min(midnight, exit_)
        pieces.append((start.date(), start, end))
        start = end
    return pieces


def day_cost(tariff: Tariff, start: dt.datetime, end: dt.datetime) -> Fraction:
    """Uncapped cost, in cents, of the part of a stay within one calendar day."""
    day = dt.datetime.combine(start.date(), dt.time(), UTC)
    cost = Fraction(0)
    for band in tariff.bands:
        lo = max(start, day + dt.timedelta(hours=band.start_hour))
        hi = min(end, day + dt.timedelta(hours=band.end_hour))
        if hi > lo:
            seconds = Fraction((hi - lo) // dt.timedelta(microseconds=1), 1_000_000)
            cost += seconds * band.cents_per_hour / 3600
    return cost


def charge(entry_at: float, exit_at: float, vehicle: dict[str, Any], tariff: Tariff = DEFAULT) -> dict[str, Any]:
    """The fee for a stay from ``entry_at`` to ``exit_at`` (epoch seconds), with its breakdown."""
    if exit_at < entry_at:
        raise ValueError("exit is before entry")
    entry = dt.datetime.fromtimestamp(entry_at, UTC)
    exit_ = dt.datetime.fromtimestamp(exit_at, UTC)
    duration = exit_at - entry_at
    days = []
    subtotal = 0
    if duration > tariff.grace_seconds:
        for day, start, end in _days(entry, exit_):
            cents = min(math.ceil(day_cost(tariff, start, end)), tariff.daily_cap_cents)
            days.append({"date": day.isoformat(), "cents": cents, "capped": cents == tariff.daily_cap_cents})
            subtotal += cents
    discount_rate = Fraction(0)
    reasons = []
    if vehicle.get("permit"):
        discount_rate, reasons = tariff.discounts["permit"], ["permit"]
    elif vehicle.get("kind") == "ev":
        discount_rate, reasons = tariff.discounts["ev"], ["ev"]
    discount = math.floor(subtotal * discount_rate)  # whole cents, rounded down
    total = subtotal - discount
    return {
        "entry_at": entry.isoformat(), "exit_at": exit_.isoformat(), "duration_seconds": round(duration, 3),
        "grace": duration <= tariff.grace_seconds, "days": days, "subtotal_cents": subtotal,
        "discount_cents": discount, "discounts": reasons, "total_cents": total,
        "total": format_cents(total, tariff.currency), "currency": tariff.currency,
    }
