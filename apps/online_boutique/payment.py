"""payment: Charge a credit card — Luhn check, VISA or MasterCard only, not expired.

No money moves; like upstream, a valid card yields a transaction id. Rejections are 400s
whose message says what is wrong, so the shopper can fix the form and try again.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from apps.online_boutique.rpc import field, money, request
from spright import Context, HTTPError


class CardError(ValueError):
    """The card was rejected; the message is for the shopper."""


def luhn_valid(number: str) -> bool:
    """The Luhn checksum: double every second digit from the right, the sum ends in 0."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def card_type(number: str) -> str | None:
    """``visa`` (4…), ``mastercard`` (51-55…, 2221-2720…), or None for anything else."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or (len(number) >= 4 and 2221 <= int(number[:4]) <= 2720):
        return "mastercard"
    return None


def validate_card(number: str, month: int, year: int, today: datetime.date | None = None) -> str:
    """Raises CardError unless the card is acceptable; returns its type."""
    digits = number.replace(" ", "").replace("-", "")
    if not luhn_valid(digits):
        raise CardError("Credit card info is invalid")
    kind = card_type(digits)
    if kind is None:
        raise CardError("Sorry, we cannot process this credit card. Only VISA or MasterCard is accepted.")
    if not 1 <= month <= 12:
        raise CardError(f"Credit card expiration month {month} is invalid")
    today = today or datetime.date.today()
    if (year, month) < (today.year, today.month):
        raise CardError(f"Your credit card (ending {digits[-4:]}) expired on {month}/{year}")
    return kind


async def payment(ctx: Context) -> dict[str, Any]:
    """``{"amount": money, "credit_card": {...}}`` → ``{"transaction_id"}``, or a 400 saying why not."""
    payload = request(ctx)
    amount = money(payload, "amount")
    card = field(payload, "credit_card", dict)
    try:
        validate_card(
            str(card.get("credit_card_number", "")),
            int(card.get("credit_card_expiration_month", 0)),
            int(card.get("credit_card_expiration_year", 0)),
        )
    except (TypeError, ValueError) as exc:
        message = str(exc) if isinstance(exc, CardError) else "Credit card info is invalid"
        raise HTTPError(400, message) from None
    if amount.total_nanos < 0:
        raise HTTPError(400, "cannot charge a negative amount")
    return {"transaction_id": str(uuid.uuid4())}
