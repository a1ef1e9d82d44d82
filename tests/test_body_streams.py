"""Streamed request bodies (``stream_body=True``, ``ctx.stream()``): the body reaches its
function as the gateway receives it, never held whole, so one past ``max_body`` passes;
a slow function holds the uploader back; a client gone mid-upload cancels the function;
bodies of other functions keep their 413. In process with TestClient, then on a real node
of every data plane with real HTTP uploads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import select
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from spright import App, Config, Context, PoolConfig
from spright.data.descriptor import STREAM_WINDOW
from spright.routing import RoutingError
from spright.testing import TestClient, node_metric, run_node
from spright.worker.streams import READER_GONE

MAX_BODY = 1 << 20
WAIT = 30.0  # an upper bound for what must happen, never a measure of how fast


def body_app() -> tuple[App, dict]:
    """An app whose functions report into ``state`` (TestClient runs them in this process)."""
    app = App("bodies", config=Config(default_timeout=30.0, pool=PoolConfig(max_body=MAX_BODY)))
    state: dict = {"taken": 0, "read": asyncio.Queue(), "gate": asyncio.Event(), "ended": asyncio.Event(),
                   "after": asyncio.Event()}

    @app.function(stream_body=True)
    async def count(ctx: Context) -> dict:
        digest, size = hashlib.sha256(), 0
        async for chunk in ctx.stream():
            digest.update(chunk)
            size += len(chunk)
        return {"bytes": size, "sha256": digest.hexdigest()}

    @app.function(stream_body=True)
    async def slow(ctx: Context) -> dict:
        """Slower than the client: a few loop turns per chunk it takes."""
        size = 0
        async for chunk in ctx.stream():
            state["taken"] += 1
            size += len(chunk)
            for _ in range(20):
                await asyncio.sleep(0)
        return {"bytes": size}

    @app.function(stream_body=True)
    async def held(ctx: Context) -> dict:
        size = 0
        try:
            async for chunk in ctx.stream():
                size += len(chunk)
                state["read"].put_nowait(size)  # the bytes read so far, as they are
                await state["gate"].wait()
        except asyncio.CancelledError as exc:
            state["cancelled"] = exc.args
            raise
        finally:
            state["ended"].set()
        return {}

    @app.function(stream_body=True)
    async def first(ctx: Context) -> dict:
        async for chunk in ctx.stream():
            return {"first": len(chunk)}
        return {"first": 0}

    @app.function()
    async def after(ctx: Context) -> dict:
        """The hop after ``first``: the request is still going when ``first`` has returned."""
        await state["after"].wait()
        return ctx.json()

    @app.function(stream_body=True)
    async def body(ctx: Context) -> dict:
        try:
            ctx.body  # noqa: B018
        except RuntimeError as exc:
            return {"error": str(exc)}
        return {"error": None}

    @app.function()
    async def whole(ctx: Context) -> dict:
        return {"bytes": len(ctx.body), "chunks": [len(c) async for c in ctx.stream()]}

    @app.function()
    async def pieces(ctx: Context) -> AsyncIterator[str]:
        for i in range(ctx.json()):
            yield f"{i},"

    @app.function(stream_body=True)
    async def relay(ctx: Context) -> dict:
        return await read_body_and_call_stream(ctx)

    for name in ("count", "slow", "held", "body", "whole", "relay"):
        app.route(f"/{name}", name, methods=["POST"])
    app.route("/first", [first, after], methods=["POST"])
    return app, state


async def read_body_and_call_stream(ctx: Context) -> dict:
    """A body's parts and a streamed call's come to one instance at once, by turns (a body's
    PART and END carry call id 0, a call's its own): neither takes the other's."""
    stream = ctx.call_stream("pieces", 40)
    size, parts = 0, []
    async for chunk in ctx.stream():
        size += len(chunk)
        if (part := await anext(stream, None)) is not None:
            parts.append(part.text)
    parts += [part.text async for part in stream]
    return {"bytes": size, "parts": "".join(parts)}


async def chunked(data: bytes, seed: int = 7) -> AsyncIterator[bytes]:
    """``data`` in chunks of random sizes (1 byte .. 200 KB), as a client's reads would cut it."""
    rng, start = random.Random(seed), 0
    while start < len(data):
        size = rng.choice((1, 17, 4096, 65536, 65537, 200_000))
        yield data[start : start + size]
        start += size


async def settled(client: TestClient) -> int:
    """The pool's slots in use once what is in flight has settled (late descriptors freed)."""
    deadline = time.monotonic() + WAIT
    while client.pool.in_use() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return client.pool.in_use()


# -- in process ------------------------------------------------------------------------------
async def test_a_body_past_max_body_reaches_its_function_byte_exact() -> None:
    app, _ = body_app()
    data = os.urandom(5 * MAX_BODY + 12345)
    async with TestClient(app) as client:
        response = await client.post("/count", body=chunked(data))
        assert response.status == 200, response.text
        assert response.json() == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        in_memory = await client.post("/count", body=data)  # bytes: sent a read's worth at a time
        assert in_memory.json()["sha256"] == hashlib.sha256(data).hexdigest()
        empty = await client.post("/count")
        assert empty.json() == {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}
        assert await settled(client) == 0


async def test_a_body_and_a_streamed_call_reach_one_handler_at_once() -> None:
    app, _ = body_app()
    data = os.urandom(3 * MAX_BODY)
    async with TestClient(app) as client:
        response = await client.post("/relay", body=chunked(data))
        assert response.status == 200, response.text
        assert response.json()["bytes"] == len(data)
        assert response.json()["parts"] == "".join(f"{i}," for i in range(40))
        assert await settled(client) == 0


async def test_other_functions_keep_max_body_and_ctx_stream_gives_their_body_whole() -> None:
    app, _ = body_app()
    async with TestClient(app) as client:
        assert (await client.post("/whole", body=b"x" * (MAX_BODY + 1))).status == 413
        assert (await client.post("/whole", body=chunked(b"x" * (MAX_BODY + 1)))).status == 413
        response = await client.post("/whole", body=chunked(b"y" * 100_000))
        assert response.json() == {"bytes": 100_000, "chunks": [100_000]}


async def test_chunks_reach_the_handler_before_the_upload_ends() -> None:
    app, state = body_app()

    async def read(size: int) -> None:
        while await state["read"].get() < size:
            pass

    async def upload() -> AsyncIterator[bytes]:
        state["gate"].set()
        for i in range(1, 4):  # the first chunk goes with the request, the others after it
            yield b"a" * 1000
            await asyncio.wait_for(read(1000 * i), WAIT)  # the client holds its next chunk until then

    async with TestClient(app) as client:
        assert (await client.post("/held", body=upload())).status == 200


async def test_a_slower_handler_holds_the_uploader_back() -> None:
    """The client offers chunks as fast as it is taken; the function takes them a few loop
    turns apart. Without flow control the whole body would be taken at once (and the pool
    fill); with it, the client is never more than the window (and a chunk's parts) ahead."""
    app, state = body_app()
    chunk, chunks = 65536, 300  # 19 MiB
    ahead: list[int] = []
    in_use: list[int] = []

    async with TestClient(app) as client:
        async def upload() -> AsyncIterator[bytes]:
            for i in range(chunks):
                ahead.append(i - state["taken"])
                in_use.append(client.pool.in_use())
                yield b"z" * chunk

        response = await client.post("/slow", body=upload())
        assert response.json() == {"bytes": chunk * chunks}
        assert max(ahead) <= STREAM_WINDOW + 3, max(ahead)
        assert max(in_use) <= STREAM_WINDOW + 4, max(in_use)
        assert await settled(client) == 0


async def test_a_handler_that_returns_early_drops_the_rest() -> None:
    """``first`` returns after one chunk, the request going on to ``after``, which waits
    until the client stopped sending (the gateway was told to drop the rest) or sent 200
    chunks (it was not)."""
    app, state = body_app()
    offered = 0

    async def upload() -> AsyncIterator[bytes]:
        nonlocal offered
        try:
            for _ in range(10_000):  # 640 MB, were it all read
                offered += 1
                if offered == 200:
                    state["after"].set()
                yield b"q" * 65536
        finally:
            state["after"].set()

    async with TestClient(app) as client:
        response = await client.post("/first", body=upload())
        assert 0 < response.json()["first"] <= 65536  # chunks are as they arrive, not as the client cut them
        assert await settled(client) == 0
        assert offered < 100  # the client was told to stop, not read to its end


async def test_a_client_gone_mid_upload_cancels_the_handler_and_the_slots_come_back() -> None:
    app, state = body_app()

    async def upload() -> AsyncIterator[bytes]:
        yield b"a" * 200_000
        await asyncio.wait_for(state["read"].get(), WAIT)
        raise ConnectionResetError("the client went away")

    async with TestClient(app) as client:
        response = await client.post("/held", body=upload())
        assert response.status == 400
        await asyncio.wait_for(state["ended"].wait(), WAIT)
        assert state.get("cancelled") == (READER_GONE,)
        assert await settled(client) == 0


async def test_max_stream_body_limits_a_streamed_body() -> None:
    app, _ = body_app()
    config = app.config.replace(max_stream_body=3 * MAX_BODY)
    async with TestClient(app, config=config) as client:
        assert (await client.post("/count", body=b"x" * (3 * MAX_BODY + 1))).status == 413  # Content-Length
        assert (await client.post("/count", body=chunked(b"x" * 3 * MAX_BODY))).status == 200

        async def upload() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536

        assert (await client.post("/count", body=upload())).status == 413  # cut mid-upload
        assert await settled(client) == 0


async def test_ctx_body_of_a_streamed_body_says_how_to_read_it() -> None:
    app, _ = body_app()
    async with TestClient(app) as client:
        error = (await client.post("/body", body=b"abc")).json()["error"]
        assert "stream_body=True" in error and "ctx.stream()" in error


def test_only_a_chains_first_function_may_stream_its_body() -> None:
    app = App("t")
    app.add_function(lambda ctx: None, name="up", stream_body=True)
    app.add_function(lambda ctx: None, name="pre")
    app.route("/ok", ["up", "pre"], methods=["POST"])
    assert app.compile().routes[0].stream_body
    app.route("/bad", ["pre", "up"], methods=["POST"])
    with pytest.raises(RoutingError, match=r"route POST /bad: function 'up' reads its body as it arrives .* hop 2"):
        app.compile()
    with pytest.raises(RoutingError, match="stream_body is True or False"):
        app.add_function(lambda ctx: None, name="x", stream_body="yes")  # type: ignore[arg-type]


# -- a real node, every data plane -------------------------------------------------------------
@pytest.fixture(scope="module")
def node(transport: str, runtime_dir) -> Iterator[int]:
    with run_node("tests.apps.uploads:app", transport=transport) as (port, _):
        yield port


def in_use(port: int) -> float:
    return node_metric(port, "spright_pool_slots_in_use")


def report(port: int, key: str) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/report", params={"key": key}, timeout=WAIT).json()


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {WAIT:g} s"
        time.sleep(0.02)


def upload_head(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".encode())
    return sock


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_node_takes_a_body_past_max_body_byte_exact(node: int) -> None:
    data = os.urandom(16 * MAX_BODY + 1)
    parts = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    response = httpx.post(f"http://127.0.0.1:{node}/count", content=parts, timeout=WAIT)  # chunked
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(data)
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    sized = httpx.put(f"http://127.0.0.1:{node}/count", content=data, timeout=WAIT)  # Content-Length
    assert sized.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert httpx.post(f"http://127.0.0.1:{node}/whole", content=data[: MAX_BODY + 1], timeout=WAIT).status_code == 413
    chunked_whole = httpx.post(f"http://127.0.0.1:{node}/whole", content=iter([data[: MAX_BODY + 1]]), timeout=WAIT)
    assert chunked_whole.status_code == 413  # no Content-Length: refused once past it
    until(lambda: in_use(node) == 0, "every slot back")


def test_node_a_body_and_a_streamed_call_reach_one_handler_at_once(node: int) -> None:
    data = os.urandom(4 * MAX_BODY)
    parts = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    response = httpx.post(f"http://127.0.0.1:{node}/relay", content=parts, timeout=WAIT)
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": len(data), "parts": "".join(f"{i}," for i in range(40))}
    until(lambda: in_use(node) == 0, "every slot back")


def test_node_chunks_reach_the_handler_before_the_upload_ends(node: int) -> None:
    """Its answer's parts say each chunk's size as the function reads it: the client reads
    that before it sends the next chunk (a body held until its end would never answer)."""
    with upload_head(node, "/echo") as sock:
        reader = sock.makefile("rb")
        sock.sendall(chunk(b"a" * 1000))
        assert reader.readline().startswith(b"HTTP/1.1 200")
        while reader.readline() != b"\r\n":
            pass
        for size in (1000, 2000, 3000):
            if size > 1000:
                sock.sendall(chunk(b"b" * size))
            assert int(reader.readline(), 16) == len(f"{size}\n")
            assert reader.readline() == f"{size}\n".encode()
            assert reader.readline() == b"\r\n"
        sock.sendall(b"0\r\n\r\n")
        assert reader.readline() == b"0\r\n"


def test_node_a_slow_handler_holds_the_uploader_back(node: int) -> None:
    """``held`` reads its first chunk and waits: the gateway stops reading the client, whose
    sends then block with most of the body unsent, and the pool holds a window of parts at
    most; released, the function reads the rest, byte-exact."""
    key, size = "held-back", 64 * MAX_BODY
    data = os.urandom(size)
    with socket.create_connection(("127.0.0.1", node), timeout=WAIT) as sock:
        sock.sendall(f"POST /held?key={key} HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n".encode())
        sock.setblocking(False)
        sent = 0
        while sent < size:
            _, writable, _ = select.select([], [sock], [], 3.0)  # 3 s without room: the gateway stopped reading
            if not writable:
                break
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(data[sent : sent + 65536])
        assert sent < size, "the whole body was taken with the function reading none of it"
        assert sent < 24 * MAX_BODY, sent  # a window of parts and the sockets' buffers
        assert in_use(node) <= STREAM_WINDOW + 6
        assert report(node, key)["chunks"] == 1
        httpx.post(f"http://127.0.0.1:{node}/release", params={"key": key}, timeout=WAIT)
        sock.setblocking(True)
        sock.settimeout(WAIT)
        sock.sendall(data[sent:])
        answer = sock.makefile("rb").readline()
        assert answer.startswith(b"HTTP/1.1 200"), answer
    assert report(node, key)["bytes"] == size
    until(lambda: in_use(node) == 0, "every slot back")


def test_node_a_client_gone_mid_upload_cancels_the_handler(node: int) -> None:
    key = "gone"
    with upload_head(node, f"/held?key={key}") as sock:
        sock.sendall(chunk(b"a" * 5000))
        until(lambda: report(node, key)["chunks"] == 1, "the function read the first chunk")
    until(lambda: report(node, key)["cancelled"] is not None, "the function was cancelled")
    assert report(node, key)["cancelled"] == [READER_GONE]
    until(lambda: in_use(node) == 0, "every slot back")


def test_node_a_handler_that_returns_early_drops_the_rest_and_keeps_the_connection(node: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{node}", timeout=WAIT) as client:
        response = client.post("/first", content=b"f" * (32 * MAX_BODY))
        assert response.status_code == 200 and response.json()["first"] > 0
        again = client.post("/count", content=b"abc")  # the same connection: the rest was read and dropped
        assert again.json()["bytes"] == 3
    until(lambda: in_use(node) == 0, "every slot back")
