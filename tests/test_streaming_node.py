"""Streamed answers on a real node, on every data plane: chunked on the wire (read by httpx
and by hand), in order, SSE framing, a client that leaves cancels the handler, a client that
stops reading stops it, and the pool is empty afterwards (tests/apps/streaming.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from spright.data.descriptor import STREAM_WINDOW
from spright.testing import node_metric, run_node
from spright.worker.streams import READER_GONE


@pytest.fixture(scope="module")
def port(transport: str, runtime_dir: Path) -> Iterator[int]:
    with run_node("tests.apps.streaming:app", transport=transport) as (port, _):
        yield port


def report(client: httpx.Client, key: str) -> dict:
    return client.get(f"/report?key={key}").json()


def until(holds, limit: float = 30.0) -> None:
    """Poll until ``holds()``, within ``limit`` seconds (another process acts meanwhile)."""
    deadline = time.monotonic() + limit
    while not holds():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def settled(read, limit: float = 30.0):
    """``read()`` once it gives the same value twice in a row, 0.1 s apart (a process that
    has stopped making progress), within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"still changing after {limit} s: {last}")


def test_a_stream_arrives_chunked_whole_and_in_order(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client, \
            client.stream("GET", "/count?n=3000&key=order") as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers
        body = b"".join(r.iter_raw())
    assert body.split(b"\n")[:-1] == [b"%d" % i for i in range(3000)]


def test_each_part_is_its_own_chunk_and_keep_alive_serves_the_next_request(port: int) -> None:
    """Read by hand: the exact chunks, the last chunk, then the same connection answers again."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /count?n=3&size=4 HTTP/1.1\r\nHost: t\r\n\r\nGET /report HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"closed early: {data!r}"
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
    assert rest.startswith(b"4\r\n..0\n\r\n4\r\n..1\n\r\n4\r\n..2\n\r\n0\r\n\r\nHTTP/1.1 200 OK")


def test_http_1_0_clients_read_a_stream_to_the_close_and_never_see_chunked(port: int) -> None:
    for method, body in (("GET", b"..0\n..1\n"), ("HEAD", b"")):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"{method} /count?n=2&size=4 HTTP/1.0\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):  # the node closes: that is where the body ends
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head, method
        assert b"transfer-encoding" not in head and rest == body, method
    until(lambda: node_metric(port, "spright_pool_slots_in_use") == 0)  # the HEAD's first part too


def test_a_head_request_gets_the_streams_head_and_its_parts_are_freed(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        r = client.head("/count?n=1000000&size=1000&key=head")
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked" and r.content == b""
        assert client.get("/report").status_code == 200  # the connection goes on
        until(lambda: report(client, "head")["cancelled"] == READER_GONE)
    until(lambda: node_metric(port, "spright_pool_slots_in_use") == 0)


def test_server_sent_events_reach_an_event_stream_client(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client, client.stream("GET", "/ticks?n=4") as r:
        assert r.headers["content-type"] == "text/event-stream" and r.headers["cache-control"] == "no-cache"
        events, fields = [], {}
        for line in r.iter_lines():
            if not line:
                events.append(fields)
                fields = {}
            else:
                name, _, value = line.partition(": ")
                fields[name] = value
    assert events == [{"event": "tick", "id": str(i), "data": f'{{"i":{i}}}'} for i in range(4)]


def test_a_client_that_leaves_cancels_the_handler_and_every_slot_comes_back(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        with client.stream("GET", "/count?n=1000000&size=1000&key=leave") as r:
            parts = r.iter_raw()
            assert next(parts)
        # the connection is closed: the handler stops where it was
        until(lambda: report(client, "leave")["cancelled"] is not None)
        state = report(client, "leave")
        assert state["cancelled"] == READER_GONE and state["produced"] < 1_000_000
        until(lambda: node_metric(port, "spright_pool_slots_in_use") == 0)


def test_a_client_that_stops_reading_stops_the_handler_until_it_reads_again(port: int) -> None:
    """The socket's buffers fill, the gateway stops crediting, the handler waits at its yield:
    what it produced is bounded by those buffers and the window, not by the stream's length."""
    n, size = 20_000, 4096  # 80 MB, far beyond what the buffers between handler and client hold
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /count?n={n}&size={size}&key=stall HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            produced = settled(lambda: report(client, "stall")["produced"])
            # kernel buffers (a few MB at most over loopback) + the window, in 4 KiB parts
            assert produced < 2_000, f"{produced} parts made for a client that reads nothing"
            slots = node_metric(port, "spright_pool_slots_in_use")
            assert slots <= 2 * STREAM_WINDOW + 1
        received, tail = 0, b""
        while not tail.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            assert chunk
            received += len(chunk)
            tail = (tail + chunk)[-5:]
    assert received > n * size
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        assert report(client, "stall") == {"produced": n, "cancelled": None}


def test_a_stream_mid_chain_is_joined_for_the_next_hop(port: int) -> None:
    r = httpx.post(f"http://127.0.0.1:{port}/shout", content=b"one two three")
    assert r.status_code == 200 and r.text == "ONE TWO THREE "
