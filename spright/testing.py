"""Test helpers: an in-process ``TestClient`` and a real multi-process node.

``TestClient`` runs the real gateway, pool, descriptors and workers in the test's event
loop over the in-memory transport (FastStream's test broker, for spright): no ports, no
processes, same code path. ``run_node`` starts ``spright run`` as a subprocess for
integration tests against the real data plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from spright.data.config import Config, MiB, PoolConfig
from spright.data.response import Refused, Response, bodiless
from spright.front.incoming import Incoming, RequestHead
from spright.host.counters import by_function, row_dict
from spright.node.assembly import NodeMemory
from spright.routing import App
from spright.testnode import free_port, node_metric, run_node
from spright.transport.local import LocalTransport

__all__ = ["Response", "StreamCut", "StreamReader", "TestClient", "free_port", "node_metric", "run_node"]

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/": kept as they are, the rest percent-encoded
TEST_POOL = PoolConfig(max_body=8 * MiB, classes=((4096, 256), (65536, 64), (MiB, 8)), large_slots=2)


class TestClient:
    """``async with TestClient(app) as client: r = await client.get("/x")``."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, *, config: Config | None = None) -> None:
        """``config``: the node's settings (default: the app's); a default-sized pool is
        replaced by a small one (TEST_POOL) so that tests start fast."""
        self.app = app
        config = config or app.config
        self.table = app.compile(dict(config.instances), default_timeout=config.default_timeout)
        self.config = config.replace(pool=TEST_POOL) if config.pool == PoolConfig() else config
        self.headers: dict[str, str] = {}  # sent with every request; a cookie jar of one
        self._uploads: set[asyncio.Task[None]] = set()  # streamed bodies still being sent

    async def __aenter__(self) -> TestClient:
        self._tmp = tempfile.TemporaryDirectory(prefix="spright-test-")
        transport = LocalTransport(Path(self._tmp.name), self.table)
        self.memory = NodeMemory.create(self.table, self.config, shared=False)  # as a node's, in this process
        self.pool, self.counters = self.memory.pools, self.memory.counters
        self.coordinator = self.memory.coordinator(transport)
        self.gateway = self.memory.gateway(self.config, self.coordinator, service=self.app.name, dataplane="local")
        await self.gateway.start(transport)
        self.workers = self.memory.workers(  # one per instance the function starts with
            self.app, [e for f in self.table.functions for e in self.table.instance_endpoints(f.id)[: f.instances]])
        for worker in self.workers:
            await worker.start(transport)
        await self.coordinator.wait_ready(self.config.ready_timeout)  # their READY descriptors arrived
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._uploads):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for worker in self.workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.drain(), 5)
            worker.close()
            await worker.closed()
        self.gateway.close()
        await self.gateway.closed()
        self.memory.close()
        self._tmp.cleanup()

    def counters_of(self, name: str) -> dict[str, int]:
        """The node's userspace counters for function ``name`` (its instances added up) or
        ``"gateway"``, right now."""
        endpoint = 0 if name == "gateway" else self.table.function_id(name)
        return row_dict(by_function(self.table, self.gateway.metrics.rows())[endpoint], gateway=endpoint == 0)

    async def request(self, method: str, path: str, **kwargs: Any) -> Response:
        """``kwargs``: ``body`` (bytes or str, or an async iterable of bytes: sent chunk by chunk
        as it yields them, as an HTTP client's chunked upload), ``json``, ``data`` (a form),
        ``headers``. A streamed answer is read to its end (``stream`` reads it part by part)."""
        response = await self._send(method, path, **kwargs)
        if response.stream is None:
            return response
        reader = StreamReader(response, room=1 << 30)
        return Response(response.status, b"".join([part async for part in reader]), response.raw_headers)

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, *, room: int = 4, **kwargs: Any) -> AsyncIterator[StreamReader]:
        """``async with client.stream("GET", "/x") as r: async for part in r: ...``: the parts
        of a streamed answer as they come (an answer in one piece is one part). ``room``:
        parts the reader holds unread before it stops taking more, as a client's socket
        buffer would (the handler then waits). Leaving early cancels the handler."""
        reader = StreamReader(await self._send(method, path, **kwargs), room)
        try:
            yield reader
        finally:
            reader.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | AsyncIterable[bytes] = b"",
        json: Any = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        path, _, query = path.partition("?")
        path = quote(path, safe=_PATH_SAFE)  # as an HTTP client sends it: the gateway decodes it
        all_headers = {**self.headers, **{k.lower(): v for k, v in (headers or {}).items()}}
        if json is not None:
            body = orjson.dumps(json)
            all_headers.setdefault("content-type", "application/json")
        elif data is not None:
            body = urlencode(data)
            all_headers.setdefault("content-type", "application/x-www-form-urlencoded")
        method = method.upper()
        chunks: AsyncIterable[bytes] | None = None
        if isinstance(body, str):
            payload: bytes | bytearray = body.encode()
        elif isinstance(body, (bytes, bytearray)):
            payload = body
        else:
            payload, chunks = b"", body
            all_headers.setdefault("transfer-encoding", "chunked")
        try:
            request = self.gateway.open_request(RequestHead(method, path, query, all_headers), len(payload))
            if chunks is not None or request.upload is not None:  # sent as it comes, or to a function reading it so
                response = await self._upload(request, _chunks(payload) if chunks is None else chunks)
            else:
                request.write(payload)
                request.complete()
                response = await self._submit(request)
        except Refused as refusal:
            response = refusal.response  # counted by the gateway as a refused request
        if method == "HEAD" or bodiless(response.status):  # what the server sends (spright.front.http.render)
            if response.stream is not None:
                response.stream.cancel(complete=True)
            return Response(response.status, b"", response.raw_headers)
        return response

    async def _submit(self, request: Incoming) -> Response:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.gateway.submit(request, future.set_result)
        return await future

    async def _upload(self, request: Incoming, body: AsyncIterable[bytes]) -> Response:
        """A body sent as ``body`` yields it: to a function that reads it as it arrives
        (``stream_body``), after the request, as the server's socket would take it (held back
        while the function has all it may hold); to any other, gathered first (413 past max_body).
        Raises Refused."""
        chunks = aiter(body)
        try:
            if request.upload is None:
                async for chunk in chunks:
                    request.write(chunk)
                request.complete()
                return await self._submit(request)
            first = await anext(chunks, None)
            request.write(first or b"")
        except BaseException:
            request.release()
            await _close(chunks)
            raise
        if first is None:
            request.complete()
        gate = _Gate()
        request.upload.reader = gate
        answer = asyncio.ensure_future(self._submit(request))
        if first is not None:
            task = asyncio.get_running_loop().create_task(self._feed(request, chunks, gate))
            self._uploads.add(task)
            task.add_done_callback(self._uploads.discard)
        return await answer

    @staticmethod
    async def _feed(request: Incoming, chunks: AsyncIterator[bytes], gate: _Gate) -> None:
        """The rest of a streamed body, chunk by chunk; an iterator that fails (or a task
        cancelled) breaks the body off, as a client that goes away mid-upload."""
        upload = request.upload
        assert upload is not None
        try:
            async for chunk in chunks:
                await gate.open.wait()
                if upload.over:
                    return  # the function is done with the body (or the request ended): no more is read
                request.write(chunk)
            request.complete()
        except Exception:
            request.release()
        except BaseException:
            request.release()
            raise
        finally:
            await _close(chunks)

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    async def head(self, path: str, **kwargs: Any) -> Response:
        return await self.request("HEAD", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, **kwargs)

    async def options(self, path: str, **kwargs: Any) -> Response:
        return await self.request("OPTIONS", path, **kwargs)


class _Gate:
    """TestClient's side of a streamed body's flow control (spright.front.uploads.Reader)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    def pause_body(self) -> None:
        self.open.clear()

    def resume_body(self) -> None:
        self.open.set()


async def _chunks(payload: bytes | bytearray, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body in memory as a client sends it: a read's worth at a time."""
    for start in range(0, len(payload), size):
        yield bytes(payload[start : start + size])


async def _close(chunks: AsyncIterator[bytes]) -> None:
    closing = getattr(chunks, "aclose", None)
    if closing is not None:
        await closing()


class StreamCut(Exception):
    """A streamed answer ended without its end: its handler failed midway, or it timed out."""


class StreamReader:
    """The reading end of a response in TestClient (``TestClient.stream``): its ``status`` and
    ``headers`` at once, its parts by ``async for``; raises StreamCut where the server would
    close the connection without the last chunk."""

    __test__ = False

    def __init__(self, response: Response, room: int) -> None:
        self.status, self.raw_headers, self.headers = response.status, response.raw_headers, response.headers
        self._stream = response.stream
        self._room = room
        self._parts: deque[bytes] = deque([response.body] if response.body or response.stream is None else [])
        self._state = "open" if response.stream is not None else "end"
        self._wake: asyncio.Future[None] | None = None
        if self._stream is not None:
            self._stream.attach(self)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        while True:
            if self._parts:
                yield self._parts.popleft()
                if self._stream is not None and self._state == "open":
                    self._stream.resume()
            elif self._state == "end":
                return
            elif self._state == "aborted":
                raise StreamCut(f"the streamed answer ({self.status}) was cut short")
            else:
                self._wake = asyncio.get_running_loop().create_future()
                await self._wake

    def close(self) -> None:
        """Done reading: a stream still open is cancelled (its handler sees it)."""
        if self._stream is not None and self._state == "open":
            self._state = "closed"
            self._stream.cancel()

    def _woken(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # -- PartSink -------------------------------------------------------------------------------
    def write(self, part: bytes) -> None:
        self._parts.append(part)
        self._woken()

    def end(self) -> None:
        self._state = "end"
        self._woken()

    def abort(self) -> None:
        self._state = "aborted"
        self._woken()

    def writable(self) -> bool:
        return len(self._parts) < self._room
