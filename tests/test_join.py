"""Pod mode's pool lock: a worker started on its own opens the gateway's lock by name."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

CHILD = """
import sys
from spright.node.join import NamedLock
lock = NamedLock(sys.argv[1])._semlock
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


def test_a_lock_opened_by_name_in_another_process_is_the_gateways_lock() -> None:
    """The private CPython API NamedLock relies on (``SemLock._rebuild``): if a Python version
    changes it, the child fails to open the lock or holds another one, and this fails."""
    lock = multiprocessing.get_context("spawn").Lock()
    name = lock._semlock.name  # what join.json hands the worker (join.handles)
    child = subprocess.Popen([sys.executable, "-c", CHILD, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "held"
        assert not lock.acquire(block=False), "the child holds the very lock the gateway made"
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(30) == 0
        assert lock.acquire(timeout=10), "released in the child, free here"
        lock.release()
    finally:
        if child.poll() is None:
            child.kill()
