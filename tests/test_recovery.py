"""A node recovers from what a killed one left: SIGKILL the supervisor, its workers follow it
(no orphans), and the next node to start removes its segments and runtime directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spright.host.nodefile import runtime_base
from spright.testing import free_port, run_node
from tests.test_node import proc_stat

pytestmark = pytest.mark.node


def test_a_killed_supervisor_leaves_no_orphans_and_the_next_node_sweeps_its_leftovers(runtime_dir: Path) -> None:
    port = free_port()
    killed = subprocess.Popen([sys.executable, "-m", "spright", "run", "examples.echo:app", "--port", str(port),
                               "--transport", "unix"], stderr=subprocess.DEVNULL)
    node_file = runtime_base() / str(killed.pid) / "node.json"
    deadline = time.monotonic() + 60
    while not node_file.exists():
        assert time.monotonic() < deadline and killed.poll() is None, "the node did not start"
        time.sleep(0.1)
    info = json.loads(node_file.read_text())
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    deadline = time.monotonic() + 10
    while any((s := proc_stat(pid)) is not None and s[0] != "Z" for pid in info["workers"].values()):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)
    assert node_file.parent.exists(), "a SIGKILLed supervisor cleans nothing itself"
    with run_node("examples.echo:app") as (_, _process):
        assert not node_file.parent.exists(), "the next node removed the dead node's runtime directory"
        assert not [name for name in info["shm"] if os.path.exists(f"/dev/shm/{name}")], "and its segments"
