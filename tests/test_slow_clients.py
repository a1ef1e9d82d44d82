"""Slow and stalled clients cannot pin the pool: a body's slot is taken as its bytes arrive (not
on the promise of a Content-Length), and a request whose headers or body stall for the node's
``request_timeout`` is answered 408, its connection closed and its slot given back."""

from __future__ import annotations

import http.client
import os
import socket
import time
from pathlib import Path

import pytest

from spright.testing import node_metric, run_node
from tests.kit.wire import read_until_close

pytestmark = pytest.mark.node
STALLED = 12  # more than the node's large slots (tests/apps/slow.py: 8 of 1 MiB, 2 of 8 MiB)


def slots_in_use(port: int) -> float:
    return node_metric(port, "spright_pool_slots_in_use")


def test_stalled_bodies_hold_no_large_slot_and_get_408(runtime_dir: Path) -> None:
    with run_node("tests.apps.slow:app") as (port, _):
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(STALLED)]
        began = time.monotonic()
        for sock in stalled:  # a large promise, a few bytes, then nothing
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 100)
        deadline = time.monotonic() + 30
        while (held := slots_in_use(port)) != STALLED:  # each stalled request holds one small slot
            assert time.monotonic() < deadline and held < STALLED, f"{held} slots held by {STALLED} stalled requests"
            time.sleep(0.02)
        body = os.urandom(200_000)  # meanwhile a real large request is served
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/echo", body)
        reply = connection.getresponse()
        assert (reply.status, reply.read()) == (200, body)
        connection.close()
        for sock in stalled:
            answer = read_until_close(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
            assert b"connection: close" in answer.lower()
            sock.close()
        assert time.monotonic() - began < 10, "the timeout is the node's request_timeout (1 s), not keep-alive's (15 s)"
        assert slots_in_use(port) == 0


def test_stalled_headers_get_408_and_an_idle_connection_is_left_alone(runtime_dir: Path) -> None:
    with run_node("tests.apps.slow:app") as (port, _):
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le")
        idle = socket.create_connection(("127.0.0.1", port))  # no request started: keep-alive rules
        assert read_until_close(stalled).startswith(b"HTTP/1.1 408 ")
        idle.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        idle.settimeout(10)
        assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")
        stalled.close()
        idle.close()


def test_an_early_413_reaches_a_client_still_sending_its_body(runtime_dir: Path) -> None:
    """Python's http.client (as urllib and requests) sends the whole body before it reads: the
    node answers 413 at the headers and reads on (lingering close) instead of resetting."""
    too_big = os.urandom(9 << 20)  # over the 8 MiB limit, no Expect: 100-continue
    with run_node("tests.apps.slow:app") as (port, _):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("POST", "/echo", too_big)
        reply = connection.getresponse()
        assert reply.status == 413 and b"limit" in reply.read()
        connection.close()
        assert slots_in_use(port) == 0


def median_latency(port: int, count: int = 30, body: bytes = b"ping") -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    took = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", "/echo", body)
        assert connection.getresponse().read() == body
        took.append(time.perf_counter() - started)
    connection.close()
    return sorted(took)[count // 2]


def test_500_slow_clients_do_not_hold_up_a_normal_request(runtime_dir: Path) -> None:
    """Normal requests, small and large, are served while 500 clients trickle their headers:
    before any of those is answered (their 408 would come at the request timeout), so nothing
    waited for them. How much they cost a normal request is a figure for bench/, not a test."""
    with run_node("tests.apps.slow:app") as (port, _):
        large = os.urandom(1 << 20)
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
        for sock in slow:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        median_latency(port)
        for sock in slow:  # still trickling: each made progress within the request timeout
            sock.sendall(b"X: y\r\n")
        median_latency(port, 10, large)
        for sock in slow:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):  # not answered yet: the normal requests did not wait for it
                sock.recv(1)
        for sock in slow:
            sock.close()


def test_connections_past_the_limit_are_answered_503(runtime_dir: Path) -> None:
    with run_node("tests.apps.slow:app") as (port, _):  # max_connections=600
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(600)]
        with socket.create_connection(("127.0.0.1", port)) as extra:  # the 601st, once the 600 are in
            answer = read_until_close(extra)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower(), answer[:200]
        for sock in idle[:10]:
            sock.close()
        deadline = time.monotonic() + 30
        while True:  # served again once the node has seen some leave
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("POST", "/echo", b"ping")
                reply = connection.getresponse()
                answered: tuple[int, bytes] | str = (reply.status, reply.read())
            except ConnectionError as exc:  # the 503 came, and the close, before the request was read
                answered = repr(exc)
            finally:
                connection.close()
            if answered == (200, b"ping"):
                break
            assert time.monotonic() < deadline, answered
        assert node_metric(port, 'spright_requests_refused_total{reason="connections"}') >= 1
        for sock in idle[10:]:
            sock.close()


def test_pipelined_requests_in_flight_per_connection_are_bounded(runtime_dir: Path) -> None:
    """200 slow requests pipelined on one connection: at most 64 reach the chains at once (the
    node stops reading the connection until answers drain), and every one is answered, in order."""
    with run_node("tests.apps.slow:app") as (port, _):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"".join(b"POST /dawdle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n%03d" % i
                              for i in range(200)))
        peak = 0.0
        received = b""
        sock.settimeout(20)
        while received.count(b"HTTP/1.1 ") < 200:
            peak = max(peak, node_metric(port, "spright_requests_in_flight"))
            received += sock.recv(65536)
        sock.close()
        assert 32 <= peak <= 64, f"requests of one connection in flight at once: {peak}"
        assert received.count(b"HTTP/1.1 200 ") == 200
