"""The rules of response headers a handler sets (``ctx.set_header``), in one place.

- A name is an RFC 9110 token; a value has no CR, LF, NUL or other control character
  (a header line must not be able to end early: the response half of request smuggling).
- Framing headers are the server's: Content-Length, Transfer-Encoding, Connection and the
  other hop-by-hop ones are written by the gateway from what it sends, never by a handler.
- Along a chain, headers accumulate: a hop's headers join those of the hops before it, and a
  name set again (by the same hop or a later one) replaces the earlier value; Set-Cookie,
  whose lines may never be joined (RFC 6265), adds a line each time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from spright.data.descriptor import BODY_JSON, BODY_TEXT

Header = tuple[str, str]
CONTENT_TYPES = {  # by the descriptor's body type, unless a handler chose one
    BODY_JSON: (b"content-type", b"application/json"),
    BODY_TEXT: (b"content-type", b"text/plain; charset=utf-8"),
}
OCTET_STREAM = (b"content-type", b"application/octet-stream")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # HTAB is allowed inside a value
# RFC 9110 §7.6.1 connection-specific fields, and the length: what the server frames with
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te",
                     "trailer", "upgrade"})
REPEATABLE = frozenset({"set-cookie"})  # one line per value, never replaced nor joined


def check_header(name: object, value: object) -> tuple[str, str]:
    """(lower-cased name, value without surrounding whitespace); TypeError or ValueError
    saying what is wrong with a header a handler may not send."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"header name and value must be str, got {type(name).__name__} and {type(value).__name__}")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"header name {name!r} is not an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~)")
    key = name.lower()
    if key in FRAMING:
        raise ValueError(f"header {name!r} is the server's: it frames the response from what it sends")
    value = value.strip(" \t")
    if _CONTROL.search(value):
        raise ValueError(f"header {name!r}: its value must not contain CR, LF, NUL or other control characters")
    return key, value


def merge_headers(earlier: Iterable[Sequence[str]], later: Sequence[Header]) -> list[Header]:
    """``earlier`` (the headers of the hops before) with ``later`` (this hop's) over them."""
    replaced = {name.lower() for name, _ in later} - REPEATABLE
    kept: list[Header] = [(name, value) for name, value in earlier if name.lower() not in replaced]
    return [*kept, *later]


def answer_headers(body_type: int, response: dict[str, Any] | None) -> list[tuple[bytes, bytes]]:
    """The header lines of an answer whose body is of ``body_type`` (the descriptor's
    ``BODY_*``), ``response`` what the handlers set along the chain (``content_type``,
    ``headers``: spright.worker.context.response_meta), if anything: its content type first."""
    content_type = CONTENT_TYPES.get(body_type, OCTET_STREAM)
    if response is None:
        return [content_type]
    if response.get("content_type"):
        content_type = (b"content-type", response["content_type"].encode())
    return [content_type, *((k.encode(), v.encode()) for k, v in response.get("headers", ()))]
