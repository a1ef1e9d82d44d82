"""An idle keep-alive connection is closed once it has been idle for ``keepalive_timeout``, not
before, and a connection that is used is not (``tests/apps/draining.py``, its timeout from
``$KEEPALIVE_TIMEOUT``)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from spright.testing import run_node

pytestmark = pytest.mark.node
REQUEST = b"GET /nap?s=0 HTTP/1.1\r\nHost: x\r\n\r\n"


def answer(sock: socket.socket) -> bytes:
    """One response (the nap's is a small one, read whole)."""
    received = b""
    while not received.endswith(b"napped"):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    return received


def test_an_idle_keepalive_connection_is_closed_after_keepalive_timeout(runtime_dir: Path) -> None:
    with run_node("tests.apps.draining:app", env={"KEEPALIVE_TIMEOUT": "2"}) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(REQUEST)
            assert answer(sock).startswith(b"HTTP/1.1 200 ")
            answered = time.monotonic()
            assert sock.recv(1) == b"", "the idle connection is closed (not reset, nothing more sent)"
            assert time.monotonic() - answered >= 1.9, "closed before it had been idle for keepalive_timeout"
        with socket.create_connection(("127.0.0.1", port), timeout=60) as busy:
            for _ in range(4):  # in use every second: 4 s on one connection, more than the timeout
                busy.sendall(REQUEST)
                assert answer(busy).startswith(b"HTTP/1.1 200 ")
                time.sleep(1)  # the idle time between requests this test is about, not a wait for an event
