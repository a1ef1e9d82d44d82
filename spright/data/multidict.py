"""``MultiDict``: a query string or a form, where a key may come more than once."""

from __future__ import annotations

from urllib.parse import parse_qsl


class MultiDict(dict[str, str]):
    """Each key's last value, as a dict (what ``dict(parse_qsl(...))`` gave, so existing code
    and orjson keep treating it as one), plus every value of a key in order: ``getlist`` (as
    Starlette's ``QueryParams``). ``getlist`` and ``multi_items`` tell what was parsed: they
    do not follow later changes to the dict."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    @classmethod
    def parse(cls, text: str) -> MultiDict:
        """``a=1&b=&a=2`` (blank values kept, as an HTML form sends an empty field)."""
        return cls(parse_qsl(text, keep_blank_values=True))

    def getlist(self, key: str) -> list[str]:
        """Every value of ``key``, in the order sent; [] when it was not sent."""
        return [value for name, value in self._pairs if name == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (key, value) pair, in the order sent."""
        return list(self._pairs)
