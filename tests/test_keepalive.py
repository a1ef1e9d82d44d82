"""An idle keep-alive connection is closed once it has been idle for ``keepalive_timeout``, not
before, and a connection that is used is not (``tests/apps/draining.py``, its timeout from
``$KEEPALIVE_TIMEOUT``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spright.testing import run_node
from tests.kit.wire import Connection

pytestmark = pytest.mark.node
REQUEST = b"GET /nap?s=0 HTTP/1.1\r\nHost: x\r\n\r\n"


def test_an_idle_keepalive_connection_is_closed_after_keepalive_timeout(runtime_dir: Path) -> None:
    with run_node("tests.apps.draining:app", env={"KEEPALIVE_TIMEOUT": "2"}) as (port, _):
        with Connection(port, timeout=60) as idle:
            idle.send(REQUEST)
            assert idle.response()[::2] == (200, b"napped")
            answered = time.monotonic()
            assert idle.closed_by_server(), "the idle connection is closed (not reset, nothing more sent)"
            assert time.monotonic() - answered >= 1.9, "closed before it had been idle for keepalive_timeout"
        with Connection(port, timeout=60) as busy:
            for _ in range(4):  # in use every second: 4 s on one connection, more than the timeout
                busy.send(REQUEST)
                assert busy.response()[::2] == (200, b"napped")
                time.sleep(1)  # the idle time between requests this test is about, not a wait for an event
