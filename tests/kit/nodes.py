"""A running node seen from a test: its ``node.json`` read by spright's own reader (typed, as
the CLI reads it, never parsed by hand) and the instance gauge of its functions."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
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


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks since boot) of a process, None if there is none.
    The start time tells a process from a later one that reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)", which may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def children_of(parent: int) -> dict[int, tuple[int, str]]:
    """The live (not zombie) child processes of ``parent``: pid -> (start time, command line).
    A node's workers are children of its template (``spright: template [APP]``), itself a child
    of the supervisor (``--worker-start spawn``: of the supervisor), each naming itself
    ``spright: worker FUNCTION [APP]`` (what ps and top show). ``descendants_of`` finds them all."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and stat[1] == parent and stat[0] != "Z":
            with contextlib.suppress(OSError):
                found[int(entry.name)] = (stat[2], (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def descendants_of(ancestor: int) -> dict[int, tuple[int, str]]:
    """``children_of`` ``ancestor``, their children, and so on."""
    found = children_of(ancestor)
    for child in list(found):
        found.update(descendants_of(child))
    return found


def still_running(pid: int, started: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


def spright(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spright", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
