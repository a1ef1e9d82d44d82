"""Late writers are fenced off: a slot being written (by a handler that outlived its request,
or by the gateway receiving a slow body) is held, and no sweep frees it for another request
until its writer lets go (spright/host/pool.py: ``hold``)."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from pathlib import Path

import pytest

from spright.testing import TestClient, node_metric, run_node
from tests.apps.kept import Kept
from tests.apps.kept import app as kept_app
from tests.apps.slow import Stubborn, app


async def test_a_handler_that_outlives_its_request_never_writes_into_a_reused_slot() -> None:
    Stubborn.slots.clear()
    Stubborn.late_writes = 0
    async with TestClient(app) as client:
        answer = await client.post("/stubborn?for=2", body=b"the stubborn request's own body")
        assert answer.status == 504
        slot, generation = Stubborn.slots[-1]
        await asyncio.sleep(app.config.grace + 0.3)  # the failed request's grace is over: a sweep ran
        assert Stubborn.late_writes > 0, "the handler is still writing"
        assert client.pool.is_current(slot, generation), "the slot was swept from under its writer"
        bodies = [f"request {i:04d} ".encode() * 20 for i in range(300)]  # every other slot, reused
        answers = await asyncio.gather(*(client.post("/echo", body=body) for body in bodies))
        assert [a.body for a in answers] == bodies, "a late write landed in another request's slot"
        deadline = time.monotonic() + 5
        while client.pool.in_use() and time.monotonic() < deadline:  # its late answer frees the slot
            await asyncio.sleep(0.05)
        assert client.pool.in_use() == 0


def post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


@pytest.mark.node
def test_a_slow_upload_keeps_its_slot_through_a_sweep(runtime_dir: Path) -> None:
    """A sweep (here: after a timed-out request's grace) while a body is still arriving must not
    free the body's slot: it would be reused while the upload keeps writing into it."""
    with run_node("tests.apps.slow:app") as (port, _):
        body = bytes(range(256)) * 80  # 20 KB: a 64 KiB-class slot
        upload = socket.create_connection(("127.0.0.1", port))
        upload.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10_000])
        assert post(port, "/stubborn?for=1.5", b"x")[0] == 504  # failed: a sweep its grace (0.5 s) later
        sent = 10_000
        for _ in range(6):  # trickle (the request timeout is 1 s) past the sweep
            time.sleep(0.2)
            upload.sendall(body[sent : sent + 10])
            sent += 10
        for i in range(20):  # requests of the same size class take whatever slot is free
            other = bytes([i]) * 20_000
            assert post(port, "/echo", other) == (200, other)
        upload.sendall(body[sent:])
        upload.settimeout(10)
        answer = b""
        while len(answer) < len(body) or b"\r\n\r\n" not in answer:
            chunk = upload.recv(65536)
            if not chunk:
                break
            answer += chunk
        upload.close()
        head, _, echoed = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:80]
        assert echoed == body
        assert node_metric(port, "spright_pool_slots_in_use") == 0


# -- a handler's background task, after the handler returned (spright/worker/fence.py) -------
async def fenced(path: str, body: bytes) -> tuple[list[object], bytes, bool]:
    """POST ``body`` to ``path`` (its handler leaves tasks behind), then a request that takes the
    same slot and waits while the tasks touch what they kept: (what the tasks got, what the
    second request answered, whether it had the same slot)."""
    Kept.go, Kept.outcome, Kept.slots = asyncio.Event(), [], []
    async with TestClient(kept_app) as client:
        answer = await client.post(path, body=body)
        assert answer.status == 200, answer.body
        first = Kept.slots[0]
        parked = asyncio.ensure_future(client.post("/park", body=b"P" * len(body)))
        while len(Kept.slots) < 2 + path.startswith("/call"):
            await asyncio.sleep(0.01)
        Kept.go.set()
        second = await parked
        assert second.status == 200
        await asyncio.gather(*Kept.tasks)
        echoed = [await client.post("/echo", body=bytes([i]) * 64) for i in range(20)]
        assert [e.body for e in echoed] == [bytes([i]) * 64 for i in range(20)]
        deadline = time.monotonic() + 5
        while client.pool.in_use() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert client.pool.in_use() == 0
        return Kept.outcome, second.body, Kept.slots[-21][0] == first[0]


async def test_a_task_reading_ctx_body_after_its_handler_returned_gets_a_clear_error() -> None:
    outcome, parked, same_slot = await fenced("/read_later", b'{"a": 1}')
    assert same_slot, "the next request did not take the slot: the test proves nothing"
    assert parked == b"P" * 8
    assert len(outcome) == 4
    for error in outcome:
        assert isinstance(error, RuntimeError) and "used after its handler returned" in str(error), error
    assert "copy it (bytes(ctx.body)) to keep it" in str(outcome[0])


async def test_a_task_writing_a_kept_ctx_body_after_its_handler_returned_writes_nothing() -> None:
    outcome, parked, same_slot = await fenced("/write_later", b"the first request's body")
    assert same_slot
    assert parked == b"P" * 24, "a late write landed in the next request's slot"
    assert len(outcome) == 2
    for error in outcome:
        assert isinstance(error, ValueError) and "released memoryview" in str(error), error


async def test_a_slice_of_the_body_kept_past_its_handler_keeps_the_slot_out_of_reuse() -> None:
    outcome, parked, same_slot = await fenced("/slice_later", b"the first request's body")
    assert outcome == [b"written"]  # into the quarantined slot: nobody else's
    assert not same_slot, "the slot a live slice points into was reused"
    assert parked == b"P" * 24


async def test_a_call_reply_kept_past_its_handler_is_a_copy() -> None:
    outcome, parked, _ = await fenced("/call_later", b'{"called": true}')
    assert outcome == [b'{"called": true}', {"called": True}]
    assert parked == b"P" * 16
