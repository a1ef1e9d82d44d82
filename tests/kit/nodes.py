"""A running node seen from a test: its ``node.json`` read by spright's own reader (typed, as
the CLI reads it, never parsed by hand) and the instance gauge of its functions."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from spright.host.nodefile import NAME, NodeFile
from spright.ops.nodes import choose_node
from spright.testing import node_metric


def node_file(pid: int) -> NodeFile:
    """The node.json of the live node whose supervisor is ``pid`` (under ``runtime_base()``)."""
    return choose_node(pid=pid)


def wait_node_file(directory: Path, process: subprocess.Popen[bytes], timeout: float = 60.0,
                   output: Callable[[], str] = lambda: "") -> NodeFile:
    """The node.json ``process`` writes in ``directory`` once it serves. Fails the test if the
    process exits first or ``timeout`` passes; ``output`` says what it printed meanwhile."""
    path = directory / NAME
    deadline = time.monotonic() + timeout
    while not path.exists():  # written whole (a rename): once there, it reads
        assert process.poll() is None, f"the node exited before it served:\n{output()}"
        assert time.monotonic() < deadline, f"the node did not serve within {timeout:g} s:\n{output()}"
        time.sleep(0.1)
    return NodeFile.read(path)


def serving(port: int, name: str) -> float:
    """How many instances of function ``name`` (of tests/apps/instances.py) serve now."""
    return node_metric(port, f'spright_instances{{domain="instances",function="{name}"}}')
