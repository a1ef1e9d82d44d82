"""currency: GetSupportedCurrencies and Convert, through EUR with exact arithmetic."""

from __future__ import annotations

from typing import Any

from apps.online_boutique.data import EUR_RATES
from apps.online_boutique.money import MoneyError
from apps.online_boutique.rpc import field, money, request, unknown_op
from spright import Context, HTTPError


async def currency(ctx: Context) -> dict[str, Any]:
    """``{"op": "supported"}`` or ``{"op": "convert", "from": money, "to_code": "EUR"}``.

    An unsupported currency is a 400, so a client's mistake never looks like a server fault.
    """
    payload = request(ctx)
    op = payload.get("op")
    if op == "supported":
        return {"currency_codes": list(EUR_RATES)}
    if op == "convert":
        amount = money(payload, "from")
        try:
            return amount.convert(field(payload, "to_code", str), EUR_RATES).to_dict()
        except MoneyError as exc:
            raise HTTPError(400, str(exc)) from None
    raise unknown_op("currency", payload)
