"""The gateway's answers: a response, the JSON error every refusal uses, and its texts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from spright.data.multidict import MultiDict


class PartSink(Protocol):
    """Where a streamed answer's parts go as they come: the client's connection (or TestClient)."""

    def write(self, part: bytes) -> None:
        """One part, in order (never empty)."""

    def end(self) -> None:
        """The last part was written: the answer is complete."""

    def abort(self) -> None:
        """The answer failed midway: the client must see it cut short, not complete."""

    def writable(self) -> bool:
        """False while the client is not reading (its side is full): parts wait, and so does
        their producer."""


class Streamed(Protocol):
    """The body of a response that comes in parts (spright.front.streams.Outflow)."""

    def attach(self, sink: PartSink) -> None:
        """The response's head is out: parts go to ``sink`` from now on (those that came first, now)."""

    def resume(self) -> None:
        """The sink is writable again."""

    def cancel(self, complete: bool = False) -> None:
        """Nobody reads the answer any more: its producer stops. ``complete``: the client has
        what it asked for (the head of a HEAD, a 204 or 304), else it went away."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # as sent, in order
    stream: Streamed | None = None  # the body comes in parts, after ``body`` (spright.front.streams)

    @property
    def headers(self) -> MultiDict:
        """Lower-cased names (as ``ctx.headers``), each name's last value; ``getlist`` gives
        every value of a repeated one (``headers.getlist("set-cookie")``)."""
        return MultiDict([(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in self.raw_headers])

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def bodiless(status: int) -> bool:
    """RFC 9110 §6.4.1: a 1xx, 204 or 304 answer carries no content (nor Content-Length)."""
    return status < 200 or status == 204 or status == 304


class Refused(Exception):
    """A request answered before it reached a chain (its body is too large, the pool is
    full...): ``response`` is the answer, already counted by the gateway."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"{response.status}: {response.body.decode(errors='replace')}")
        self.response = response


def error_response(status: int, message: str, **extra: Any) -> Response:
    """The one shape of every error body: ``error`` and ``status``; ``function`` where a
    function failed, ``error_id`` for an unexpected exception (``extra`` adds them)."""
    body = orjson.dumps({"error": message, "status": status, **extra})
    headers = [(b"content-type", b"application/json")]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    return Response(status, body, headers)


def body_too_large(limit: int) -> Response:
    return error_response(413, f"request body over the limit of {limit} bytes")


def no_payload_space() -> Response:
    return error_response(503, "no free payload space, retry shortly")
