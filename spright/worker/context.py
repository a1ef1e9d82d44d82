"""``ctx``: what a handler sees — the payload in place, the request, and calls.

The payload is a memoryview straight into the shared-memory slot: no hop copies it.
Request metadata (method, path, headers...) sits at the slot's tail and is decoded only
when a handler first asks for it, so a hop that only touches the body pays nothing.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from http.cookies import _unquote  # private, but the stdlib's own rules (Starlette uses it too)
from pickle import PickleBuffer
from typing import Any, Protocol

import orjson
from mypy_extensions import mypyc_attr

from spright.data.descriptor import BODY_BYTES, BODY_JSON, BODY_TEXT, HAS_RESPONSE_META, Descriptor
from spright.data.headers import check_header, merge_headers
from spright.data.multidict import MultiDict
from spright.data.table import RouteTable
from spright.host.pool import Payload, read_meta
from spright.worker.chunks import BodyStream, Whole


class Runner(Protocol):
    """What ``ctx`` needs of the worker that runs it (spright.worker.runtime.Worker)."""

    table: RouteTable

    def call(self, ctx: Context, function: str, value: Any) -> asyncio.Future[Reply]: ...

    def call_stream(self, ctx: Context, function: str, value: Any) -> AsyncIterator[Reply]: ...


class HTTPError(Exception):
    """Raise from a handler to answer with this status and a JSON ``{"error": detail}``."""

    def __init__(self, status: int, detail: str = "") -> None:
        if not 400 <= status <= 599:
            hint = ": answer a redirect with `return ctx.redirect(url, status)`" if 300 <= status <= 399 else ""
            raise ValueError(f"HTTPError status must be 4xx or 5xx, got {status}{hint}")
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


@mypyc_attr(native_class=False)  # a bytes subclass: mypyc compiles it as a plain Python class
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

    @property
    def text(self) -> str:
        """The body decoded as UTF-8: a property, as ``Response.text`` (and httpx's) is."""
        return self.body.decode()


AFTER_RETURN = "used after its handler returned"  # every fenced accessor's error says this


def ended(what: str) -> RuntimeError:
    """What a background task gets for touching the slot of a handler that returned: the slot
    may hold another request by then."""
    if what == "ctx.body":
        return RuntimeError(f"ctx.body {AFTER_RETURN}: copy it (bytes(ctx.body)) to keep it")
    return RuntimeError(f"{what} {AFTER_RETURN}: its slot may hold another request now; read what "
                        "you need (a copy) before the handler returns")


class Context:
    """One invocation of a handler. Valid only until the handler returns: then the worker
    releases ``ctx.body`` (a view kept from it raises ValueError "operation forbidden on
    released memoryview object") and ``ctx``'s accessors of the slot raise RuntimeError."""

    __slots__ = (
        "_body",
        "_descriptor",
        "_ended",
        "_inner",
        "_meta",
        "_raw_meta",
        "_slot_view",
        "_status",
        "_upload",
        "_worker",
        "content_type",
        "response_headers",
    )

    def __init__(self, worker: Runner, descriptor: Descriptor, slot_view: memoryview) -> None:
        self._worker = worker
        self._descriptor = descriptor
        self._slot_view = slot_view
        # ctx.body, made on first use: a view over a PickleBuffer of ``_inner`` (the payload's
        # bytes), so that whatever the handler derives from it (slices, exports) holds ``_inner``
        # and the worker sees, once the handler returned, whether any of it is still alive
        self._body: memoryview | None = None
        self._inner: memoryview | None = None
        self._ended = False
        self._meta: dict[str, Any] | None = None
        self._raw_meta: builtins.bytes | None = None
        self._status: int | None = None
        self._upload: BodyStream | None = None  # the body arrives after the request (stream_body=True)
        self.content_type: str | None = None
        self.response_headers: list[tuple[str, str]] = []

    # -- payload ---------------------------------------------------------------------------
    @property
    def body(self) -> memoryview:
        """The payload in place: a writable view of the request's slot, valid until the
        handler returns (keep a copy, ``bytes(ctx.body)``, for later)."""
        body = self._body
        if body is None:
            if self._ended:
                raise ended("ctx.body")
            if self._upload is not None:
                raise RuntimeError("ctx.body: this function reads its request body as it arrives (stream_body=True), "
                                   "so it is never whole here: read it with `async for chunk in ctx.stream()`")
            inner = self._inner = self._slot_view[: self._descriptor.length]
            body = self._body = memoryview(PickleBuffer(inner))
        return body

    def bytes(self) -> bytes:
        return bytes(self.body)

    def stream(self) -> AsyncIterator[builtins.bytes]:
        """The request body in chunks (bytes, copies) as they come: ``async for chunk in
        ctx.stream()``. A function registered with ``stream_body=True`` gets them as the gateway
        receives them (a body past ``max_body`` may pass; returning before its end drops the
        rest); any other gets its whole body as one chunk. Read once."""
        if self._ended:
            raise ended("ctx.stream()")
        if self._upload is not None:
            return self._upload.chunks()
        return Whole(builtins.bytes(self.body))

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

    def form(self) -> MultiDict:
        """A form-encoded body (application/x-www-form-urlencoded): ``form()["k"]`` is the
        last value of ``k``, ``form().getlist("k")`` all of them."""
        return MultiDict.parse(self.text())

    # -- request metadata ------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        """The request's metadata (method, path, query, headers, params, route, and the
        response a hop shaped), decoded once."""
        if self._ended:
            raise ended("ctx's request metadata (method, path, headers, query, params...)")
        if self._meta is None:
            raw = read_meta(self._slot_view)
            self._meta = orjson.loads(raw) if len(raw) else {}
        return self._meta

    @property
    def request_id(self) -> int:
        return self._descriptor.request_id

    @property
    def method(self) -> str:
        return self._fields().get("method", "")

    @property
    def path(self) -> str:
        return self._fields().get("path", "")

    @property
    def params(self) -> dict[str, Any]:
        """Path parameters, typed as the route declares them (``{n:int}`` -> int)."""
        meta = self._fields()
        params = meta.get("params", {})
        return self._worker.table.routes[meta["route"]].convert(params) if params else params

    @property
    def timeout(self) -> float | None:
        """Seconds the route gives its whole chain (None outside a route)."""
        route = self._fields().get("route")
        return self._worker.table.routes[route].timeout if route is not None else None

    @property
    def query(self) -> MultiDict:
        """``query["k"]`` is the last value of ``k``, ``query.getlist("k")`` all of them."""
        return MultiDict.parse(self._fields().get("query", ""))

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; repeated headers are joined with ', ' (Cookie lines with '; ')."""
        return self._fields().get("headers", {})

    @property
    def cookies(self) -> dict[str, str]:
        """``name=value`` pairs of the Cookie header; a quoted value is unquoted as
        ``http.cookies`` does (Starlette's ``cookie_parser`` too): ``a="x y"`` gives ``x y``."""
        pairs = (part.partition("=") for part in self.headers.get("cookie", "").split(";"))
        return {name.strip(): _unquote(value.strip()) for name, _, value in pairs if name.strip()}

    # -- response --------------------------------------------------------------------------
    @property
    def status(self) -> int | None:
        """The response's status; None: the one the chain carries (200 unless a hop set one)."""
        return self._status

    @status.setter
    def status(self, value: object) -> None:  # object: a compiled setter would refuse a str before this check
        # checked here, where the handler's traceback points: a bad one used to fail later,
        # in the worker (a str: struct.error) or reach the client as it was (99, 600)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ctx.status must be an int, got {value!r} ({type(value).__name__})")
            if not 200 <= value <= 599:  # 1xx are interim answers, never a request's final one
                raise ValueError(f"ctx.status must be a final HTTP status, 200..599, got {value}")
            value = int(value)  # an IntEnum (http.HTTPStatus) as the plain number
        self._status = value

    def set_header(self, name: str, value: str) -> None:
        """A response header (spright.data.headers): it replaces an earlier one of the same name,
        set here or by an earlier hop, except Set-Cookie, which adds a line each time;
        ``Content-Type`` sets ``content_type``. Framing headers (Content-Length,
        Transfer-Encoding, Connection...) are the server's: ValueError, as for a name that is
        not a token or a value with CR, LF or another control character."""
        key, value = check_header(name, value)
        if key == "content-type":
            self.content_type = value
        else:
            self.response_headers = merge_headers(self.response_headers, ((name, value),))

    def redirect(self, location: str, status: int = 307) -> None:
        """Answer a redirect (``return ctx.redirect("/cart")``): ``status`` (3xx; 307 keeps
        the method and body, 303 makes a GET of it) and ``Location``, as Starlette's
        RedirectResponse; an empty body unless the handler returns one."""
        if type(status) is not int or not 300 <= status <= 399:
            raise ValueError(f"a redirect's status is 300..399, got {status!r}")
        self.set_header("location", location)
        self.status = status

    # -- internal calls --------------------------------------------------------------------
    def call(self, function: str, payload: Any = None) -> asyncio.Future[Reply]:
        """Run ``function`` over the data plane with ``payload``: sent at once; await the
        returned future for its result (a failure is raised there, as ``CallError``).
        Being a future, not a coroutine, ``asyncio.gather`` of calls needs no Task each."""
        if self._ended:
            raise ended("ctx.call")
        return self._worker.call(self, function, payload)

    def call_stream(self, function: str, payload: Any = None) -> AsyncIterator[Reply]:
        """Run ``function`` as ``call`` does, and take its answer part by part as it produces
        them: ``async for part in ctx.call_stream("fn", payload)``, each part a ``Reply``.
        A streaming (async generator) function sends each part as it yields it; any other
        answers in one part. Leaving the loop early stops the callee (spright.worker.inflows)."""
        if self._ended:
            raise ended("ctx.call_stream")
        return self._worker.call_stream(self, function, payload)


# -- for the worker (spright.worker.runtime), not the handler -----------------------------
def stream_body(ctx: Context, body: BodyStream) -> None:
    """The request's body arrives after it, from ``body`` (spright.worker.bodies)."""
    ctx._upload = body


def descriptor_of(ctx: Context) -> Descriptor:
    """The descriptor that brought the request to this hop."""
    return ctx._descriptor


def body_of(ctx: Context) -> memoryview | None:
    """``ctx.body`` if the handler asked for it (None: it never did)."""
    return ctx._body


def end(ctx: Context) -> bool:
    """The handler returned: ``ctx.body`` is released and ``ctx``'s accessors of the slot
    raise from now on. False when something derived from the body (a slice, a numpy array,
    a ctypes buffer...) is still alive and points into the slot: the slot must not be reused
    until it is gone (spright.worker.fence)."""
    ctx._ended = True
    ctx._slot_view.release()  # never handed out: no export holds it (the body's slices hold the segment)
    body = ctx._body
    if body is None:
        return True
    ctx._body = None
    try:  # noqa: SIM105 (contextlib.suppress costs a call per request)
        body.release()
    except BufferError:  # exported: ``_inner`` is still exported too, and says so below
        pass
    inner = ctx._inner
    assert inner is not None
    try:
        inner.release()
    except BufferError:
        return False
    ctx._inner = None
    return True


def inner_of(ctx: Context) -> memoryview | None:
    """The view whose exports tell whether anything derived from the body is alive (after a
    failed ``end``): it can be released once they are gone."""
    return ctx._inner


def request_meta(ctx: Context) -> dict[str, Any]:
    """The request's metadata, decoded."""
    return ctx._fields()


def raw_meta(ctx: Context) -> builtins.bytes:
    """The request's metadata as the gateway encoded it (a ``ctx.call`` hands it on)."""
    if ctx._raw_meta is None:
        ctx._raw_meta = bytes(read_meta(ctx._slot_view))
    return ctx._raw_meta


def response_meta(ctx: Context) -> dict[str, Any] | None:
    """What the gateway renders of the HTTP response (spright.data.headers): the headers of this
    hop over those of the hops before it, and this hop's content type (None: the one of its
    return type; an earlier hop's labelled that hop's body, not this one). None when what the
    slot's metadata already says stays true."""
    content_type, headers = ctx.content_type, ctx.response_headers
    if content_type is not None:  # an attribute: checked here, before it reaches a header line
        content_type = ctx.content_type = check_header("content-type", content_type)[1]
    earlier = ctx._fields().get("response") if ctx._descriptor.flags & HAS_RESPONSE_META else None
    if earlier is None:
        if content_type is None and not headers:
            return None
        return {"content_type": content_type, "headers": headers}
    if content_type is None and not headers and earlier.get("content_type") is None:
        return None
    return {"content_type": content_type, "headers": merge_headers(earlier.get("headers", ()), headers)}
