"""Server-Sent Events framing (the WHATWG HTML standard, "Server-sent events"): what a
streaming handler yields, one event per part, to a browser's ``EventSource``::

    @app.function()
    async def ticker(ctx):
        ctx.content_type = "text/event-stream"
        for n in range(10):
            yield sse({"n": n}, event="tick", id=str(n))
"""

from __future__ import annotations

from typing import Any

import orjson


def sse(data: Any, *, event: str | None = None, id: str | None = None, retry: int | None = None) -> str:
    """One event: ``data`` (str as it is, anything else as JSON; each of its lines a ``data:``
    line), its ``event`` type, ``id`` (the client's ``Last-Event-ID`` on reconnection) and
    ``retry`` (ms before a reconnection)."""
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    fields = []
    for name, value in (("event", event), ("id", id)):
        if value is not None:
            if "\n" in value or "\r" in value or (name == "id" and "\0" in value):
                raise ValueError(f"an SSE {name} must be one line: {value!r}")
            fields.append(f"{name}: {value}\n")
    if retry is not None:
        fields.append(f"retry: {int(retry)}\n")
    fields.extend(f"data: {line}\n" for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "".join(fields) + "\n"
