"""The services' wire conventions: a JSON object in, a JSON object out, 400 on a bad request.

Each service is one spright function playing a gRPC service of Online Boutique; the ``op``
field names the method (``{"op": "get", "id": ...}``), so one worker serves the whole service.
"""

from __future__ import annotations

from typing import Any, TypeVar

from apps.online_boutique.money import Money, MoneyError
from spright import Context, HTTPError

T = TypeVar("T")


def request(ctx: Context) -> dict[str, Any]:
    """The call's payload as a JSON object (400 otherwise)."""
    payload = ctx.json()
    if not isinstance(payload, dict):
        raise HTTPError(400, "expected a JSON object")
    return payload


def field(payload: dict[str, Any], name: str, kind: type[T]) -> T:
    """``payload[name]`` checked against ``kind``: a missing or mistyped field is a 400."""
    value = payload.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HTTPError(400, f"field {name!r} must be a {kind.__name__}")
    return value


def money(payload: dict[str, Any], name: str) -> Money:
    """A money field, validated (400 when malformed)."""
    try:
        return Money.from_dict(field(payload, name, dict))
    except MoneyError as exc:
        raise HTTPError(400, f"field {name!r}: {exc}") from None


def unknown_op(service: str, payload: dict[str, Any]) -> HTTPError:
    return HTTPError(400, f"{service}: unknown op {payload.get('op')!r}")
