"""SIGTERM under load: the node stops accepting at once, answers every request it had admitted,
and exits 0; a request that outlives ``drain_timeout`` is answered 503 and the node still exits
(``tests/apps/draining.py``)."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from spright.testing import node_metric, run_node

pytestmark = pytest.mark.node
CLIENTS = 16


def get(port: int, path: str, results: list[tuple[int, bytes] | str], index: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        results[index] = (reply.status, reply.read())
    except OSError as exc:
        results[index] = f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def admit(port: int, path: str, count: int) -> tuple[list[threading.Thread], list[tuple[int, bytes] | str]]:
    """``count`` clients with a request each, returned once the node counts them all in flight."""
    results: list[tuple[int, bytes] | str] = ["no answer"] * count
    threads = [threading.Thread(target=get, args=(port, path, results, i)) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while node_metric(port, "spright_requests_in_flight") < count:
        assert time.monotonic() < deadline, "the requests were not admitted"
        time.sleep(0.02)
    return threads, results


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("transport", ["unix", pytest.param("skmsg", marks=pytest.mark.kernel)])
def test_sigterm_under_load_answers_every_admitted_request_and_refuses_new_ones(transport: str,
                                                                                runtime_dir: Path) -> None:
    with run_node("tests.apps.draining:app", transport=transport) as (port, process):
        threads, results = admit(port, "/nap?s=3", CLIENTS)
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not refused(port):  # the listener closes as soon as the signal is handled
            assert time.monotonic() < deadline, "new connections were still accepted after SIGTERM"
            time.sleep(0.02)
        still_napping = sum(thread.is_alive() for thread in threads)
        for thread in threads:
            thread.join(120)
        assert results == [(200, b"napped")] * CLIENTS, results
        assert still_napping, "the refusal was checked after the admitted requests ended: it proves nothing"
        assert process.wait(60) == 0


def test_a_request_that_outlives_the_drain_timeout_is_answered_503_and_the_node_exits(runtime_dir: Path) -> None:
    with run_node("tests.apps.draining:app", env={"DRAIN_TIMEOUT": "1"}) as (port, process):
        threads, results = admit(port, "/nap?s=600", 2)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        answered = time.monotonic() - signalled
        assert [r[0] if isinstance(r, tuple) else r for r in results] == [503, 503], results
        assert all(b"shutting down" in r[1] for r in results if isinstance(r, tuple))
        assert process.wait(60) == 0
        assert answered < 60, f"answered {answered:.1f} s after SIGTERM: the 600 s handlers were waited for"
    left = subprocess.run(["pgrep", "-f", r"spright: worker nap \[draining\]"], capture_output=True, text=True).stdout
    assert left == "", f"workers still running their 600 s handlers: {left}"
