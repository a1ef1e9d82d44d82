"""Money as Online Boutique's ``google.type.Money``: a currency code, whole units and nanos.

Everything here is exact: amounts are handled as integer nanos and conversions as
``Fraction``s of decimal rate strings, so 0.1 + 0.2 is 0.3 and a price converted through
EUR never drifts by a float rounding error. Units and nanos carry the same sign, and
``|nanos| < 10**9`` (upstream's validity rule).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, NamedTuple

NANOS_PER_UNIT = 1_000_000_000
SYMBOLS = {"USD": "$", "CAD": "$", "JPY": "¥", "EUR": "€", "TRY": "₺", "GBP": "£"}


class MoneyError(ValueError):
    """An invalid amount or a mix of currencies."""


class Money(NamedTuple):
    currency_code: str
    units: int
    nanos: int

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_nanos(cls, currency_code: str, total: int) -> Money:
        """Split integer nanos into units and nanos with the same sign (truncating toward 0)."""
        sign = -1 if total < 0 else 1
        units, nanos = divmod(abs(total), NANOS_PER_UNIT)
        return cls(currency_code, sign * units, sign * nanos)

    @classmethod
    def parse(cls, currency_code: str, amount: str) -> Money:
        """``Money.parse("USD", "19.99")``: decimal text, exact (no float on the way)."""
        value = Fraction(amount) * NANOS_PER_UNIT
        if value.denominator != 1:
            raise MoneyError(f"{amount!r} has more than 9 decimal places")
        return cls.from_nanos(currency_code, int(value))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Money:
        """From the wire form ``{"currency_code", "units", "nanos"}``; validates it."""
        try:
            money = cls(str(data["currency_code"]), int(data.get("units", 0)), int(data.get("nanos", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise MoneyError(f"not a money value: {data!r}") from exc
        money.validate()
        return money

    def to_dict(self) -> dict[str, Any]:
        return {"currency_code": self.currency_code, "units": self.units, "nanos": self.nanos}

    # -- rules -------------------------------------------------------------------------------
    def validate(self) -> None:
        if not (len(self.currency_code) == 3 and self.currency_code.isalpha() and self.currency_code.isupper()):
            raise MoneyError(f"bad currency code {self.currency_code!r}")
        if not -NANOS_PER_UNIT < self.nanos < NANOS_PER_UNIT:
            raise MoneyError(f"nanos out of range: {self.nanos}")
        if (self.units > 0 and self.nanos < 0) or (self.units < 0 and self.nanos > 0):
            raise MoneyError(f"units and nanos have different signs: {self.units}, {self.nanos}")

    @property
    def total_nanos(self) -> int:
        return self.units * NANOS_PER_UNIT + self.nanos

    # -- arithmetic --------------------------------------------------------------------------
    def __add__(self, other: object) -> Money:  # type: ignore[override]
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency_code != self.currency_code:
            raise MoneyError(f"cannot add {other.currency_code} to {self.currency_code}")
        return Money.from_nanos(self.currency_code, self.total_nanos + other.total_nanos)

    def __neg__(self) -> Money:
        return Money(self.currency_code, -self.units, -self.nanos)

    def __sub__(self, other: Money) -> Money:
        return self + (-other)

    def __mul__(self, count: object) -> Money:  # type: ignore[override]
        if not isinstance(count, int) or isinstance(count, bool):
            return NotImplemented
        return Money.from_nanos(self.currency_code, self.total_nanos * count)

    def is_zero(self) -> bool:
        return self.units == 0 and self.nanos == 0

    # -- conversion and display --------------------------------------------------------------
    def convert(self, to_code: str, rates: Mapping[str, str]) -> Money:
        """Through EUR as upstream: amount / rate[from] * rate[to], rounded half-even to nanos.

        Rates are decimal strings (units of the currency per 1 EUR), read as exact fractions.
        """
        for code in (self.currency_code, to_code):
            if code not in rates:
                raise MoneyError(f"unsupported currency {code!r}")
        if to_code == self.currency_code:
            return self
        exact = Fraction(self.total_nanos) * Fraction(rates[to_code]) / Fraction(rates[self.currency_code])
        return Money.from_nanos(to_code, round(exact))

    def format(self) -> str:
        """``$19.99``: the symbol (or code), units and the first two digits of nanos, like upstream."""
        symbol = SYMBOLS.get(self.currency_code, self.currency_code + " ")
        sign = "-" if self.total_nanos < 0 else ""
        return f"{sign}{symbol}{abs(self.units)}.{abs(self.nanos) // 10_000_000:02d}"


def total(amounts: Iterable[Money], currency_code: str) -> Money:
    """The sum of ``amounts`` (all in ``currency_code``); zero when there are none."""
    result = Money(currency_code, 0, 0)
    for amount in amounts:
        result = result + amount
    return result


def format_money(data: Mapping[str, Any] | Money) -> str:
    """Jinja filter: a wire-form or ``Money`` amount as display text."""
    money = data if isinstance(data, Money) else Money.from_dict(data)
    return money.format()
