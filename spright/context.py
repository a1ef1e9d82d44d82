"""``ctx``: what a handler sees — the payload in place, the request, and calls.

The payload is a memoryview straight into the shared-memory slot: no hop copies it.
Request metadata (method, path, headers...) sits at the slot's tail and is decoded only
when a handler first asks for it, so a hop that only touches the body pays nothing.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from spright.descriptor import BODY_BYTES, BODY_JSON, BODY_TEXT, Descriptor
from spright.pool import Payload, read_meta

if TYPE_CHECKING:
    from spright.runtime import Worker


class HTTPError(Exception):
    """Raise from a handler to answer with this status and a JSON ``{"error": detail}``."""

    def __init__(self, status: int, detail: str = "") -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HTTPError status must be 4xx or 5xx, got {status}")
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class CallError(HTTPError):
    """A ``ctx.call`` target failed; unhandled, it fails the caller with the same status.

    ``function`` names where the failure began, even through nested calls, so the detail
    reaches the client as the failing function said it, without a prefix per hop;
    ``error_id``, when that was an unexpected exception, the id its worker logged it under.
    """

    def __init__(self, status: int, detail: str = "", function: str = "", error_id: str | None = None) -> None:
        super().__init__(status, detail)
        self.function = function
        self.error_id = error_id


class JSONBytes(bytes):
    """Bytes that already hold JSON: a handler returns them as they are, marked as JSON (the
    gateway answers ``application/json``, a caller's ``reply.json()`` decodes them). Encode
    what never changes once, e.g. ``PRODUCT = JSONBytes(orjson.dumps(product))`` at import,
    and no request pays for it again."""

    __slots__ = ()


def encode(value: Any) -> tuple[Payload, int]:
    """A handler's return value as (payload, body flag); orjson for anything structured."""
    if value is None:
        return b"", BODY_BYTES
    if type(value) is JSONBytes:
        return value, BODY_JSON
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value, BODY_BYTES
    if isinstance(value, str):
        return value.encode(), BODY_TEXT
    return orjson.dumps(value), BODY_JSON


class Reply:
    """What ``await ctx.call(...)`` returns: the callee's output, copied out of its slot."""

    __slots__ = ("body", "is_json")

    def __init__(self, body: bytes, is_json: bool) -> None:
        self.body = body
        self.is_json = is_json

    def json(self) -> Any:
        return orjson.loads(self.body)

    def text(self) -> str:
        return self.body.decode()


class Context:
    """One invocation of a handler. Valid only until the handler returns."""

    __slots__ = (
        "_meta",
        "_raw_meta",
        "_slot_view",
        "_worker",
        "body",
        "content_type",
        "descriptor",
        "response_headers",
        "status",
    )

    def __init__(self, worker: Worker, descriptor: Descriptor, slot_view: memoryview) -> None:
        self._worker = worker
        self.descriptor = descriptor
        self._slot_view = slot_view
        self.body: memoryview = slot_view[: descriptor.length]
        self._meta: dict[str, Any] | None = None
        self._raw_meta: builtins.bytes | None = None
        self.status: int | None = None
        self.content_type: str | None = None
        self.response_headers: list[tuple[str, str]] = []

    # -- payload ---------------------------------------------------------------------------
    def bytes(self) -> bytes:
        return bytes(self.body)

    def text(self) -> str:
        try:
            return str(self.body, "utf-8")
        except UnicodeDecodeError as exc:
            problem = str(exc)  # raised outside: the decode error references the slot's memory
        raise HTTPError(400, f"body is not valid UTF-8: {problem}")

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            problem = str(exc)  # raised outside: the decode error references the slot's memory
        raise HTTPError(400, f"body is not valid JSON: {problem}")

    def form(self) -> dict[str, str]:
        """A form-encoded body (application/x-www-form-urlencoded), last value wins."""
        return dict(parse_qsl(self.text(), keep_blank_values=True))

    # -- request metadata ------------------------------------------------------------------
    def raw_meta(self) -> builtins.bytes:
        """The request's metadata as the gateway encoded it (a ``ctx.call`` hands it on)."""
        if self._raw_meta is None:
            self._raw_meta = bytes(read_meta(self._slot_view))
        return self._raw_meta

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            raw = read_meta(self._slot_view)
            self._meta = orjson.loads(raw) if len(raw) else {}
        return self._meta

    @property
    def request_id(self) -> int:
        return self.descriptor.request_id

    @property
    def method(self) -> str:
        return self.meta.get("method", "")

    @property
    def path(self) -> str:
        return self.meta.get("path", "")

    @property
    def params(self) -> dict[str, Any]:
        """Path parameters, typed as the route declares them (``{n:int}`` -> int)."""
        meta = self.meta
        params = meta.get("params", {})
        return self._worker.table.routes[meta["route"]].convert(params) if params else params

    @property
    def timeout(self) -> float | None:
        """Seconds the route gives its whole chain (None outside a route)."""
        route = self.meta.get("route")
        return self._worker.table.routes[route].timeout if route is not None else None

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.meta.get("query", ""), keep_blank_values=True))

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; repeated headers are joined with ', '."""
        return self.meta.get("headers", {})

    @property
    def cookies(self) -> dict[str, str]:
        pairs = (part.strip().partition("=") for part in self.headers.get("cookie", "").split(";"))
        return {name: value for name, _, value in pairs if name}

    # -- response --------------------------------------------------------------------------
    def set_header(self, name: str, value: str) -> None:
        if "\r" in name + value or "\n" in name + value:
            raise ValueError("header names and values must not contain CR or LF")
        self.response_headers.append((name, value))

    def response_meta(self) -> dict[str, Any]:
        """What the gateway needs to render the handler's choices (content type, headers)."""
        return {"content_type": self.content_type, "headers": self.response_headers}


    # -- internal calls --------------------------------------------------------------------
    def call(self, function: str, payload: Any = None) -> asyncio.Future[Reply]:
        """Run ``function`` over the data plane with ``payload``: sent at once; await the
        returned future for its result (a failure is raised there, as ``CallError``).
        Being a future, not a coroutine, ``asyncio.gather`` of calls needs no Task each."""
        return self._worker.call(self, function, payload)
