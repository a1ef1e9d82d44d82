"""A node recovers from what a killed one left: SIGKILL the supervisor, its workers follow it
(no orphans); SIGKILL the node's whole process group (the resource tracker that would unlink its
segments included, as a container kill or the OOM killer does), and the next node to start
removes its segments, its runtime directory and, on skmsg, its BPF pins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from spright.host.nodefile import NAME, NodeFile, runtime_base
from spright.testing import free_port, run_node
from tests.kit.nodes import children_of, proc_stat, wait_node_file

pytestmark = pytest.mark.node


def start_killable(transport: str, *, session: bool = False) -> tuple[subprocess.Popen[bytes], Path, NodeFile]:
    """``spright run`` of the echo app; returns it once serving, its node.json's path and content.
    ``session``: in a process group of its own, so that all of it can be killed at once."""
    killed = subprocess.Popen([sys.executable, "-m", "spright", "run", "examples.echo:app", "--port",
                               str(free_port()), "--transport", transport], stderr=subprocess.DEVNULL,
                              start_new_session=session)
    node_dir = runtime_base() / str(killed.pid)
    return killed, node_dir / NAME, wait_node_file(node_dir, killed)


def test_a_killed_supervisor_leaves_no_orphans(runtime_dir: Path) -> None:
    killed, node_file, info = start_killable("unix")
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    deadline = time.monotonic() + 10
    while any((s := proc_stat(pid)) is not None and s[0] != "Z" for pid in info.workers.values()):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)
    assert node_file.parent.exists(), "a SIGKILLed supervisor cleans nothing itself"
    with run_node("examples.echo:app"):
        assert not node_file.parent.exists(), "the next node removed the dead node's runtime directory"


@pytest.mark.parametrize("transport", ["unix", "poll", pytest.param("skmsg", marks=pytest.mark.kernel)])
def test_the_next_node_sweeps_what_a_killed_node_left(transport: str, runtime_dir: Path) -> None:
    killed, node_file, info = start_killable(transport, session=True)
    os.killpg(killed.pid, signal.SIGKILL)  # the supervisor, its workers and its resource tracker
    killed.wait(10)
    segments = [Path("/dev/shm", name) for name in info.shm]
    pins = Path(info.transport_info["pin_dir"]) if transport == "skmsg" else None
    # what the sweep is for is really there: nothing else removed it
    assert segments and all(s.exists() for s in segments), "the killed node's segments are left"
    assert pins is None or pins.is_dir(), "the killed node's BPF pins are left"
    with run_node("examples.echo:app", transport=transport):
        assert not node_file.parent.exists(), "the next node removed the dead node's runtime directory"
        assert not [s for s in segments if s.exists()], "and its segments"
        assert pins is None or not pins.exists(), "and its BPF pins"


@pytest.mark.needs("root")
def test_a_node_in_another_pid_namespace_leaves_this_ones_nodes_alone(runtime_dir: Path) -> None:
    """A pod's gateway runs in a PID namespace of its own, where no pid of the host's nodes
    exists: to its sweep they would all look killed (it removed their segments and runtime
    directories under a parallel test run). They are left alone."""
    with run_node("examples.echo:app") as (port, process):
        host_dir = runtime_base() / str(process.pid)
        segments = [Path("/dev/shm", name) for name in NodeFile.read(host_dir / NAME).shm]
        inside = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child=SIGTERM", sys.executable, "-m",
                                   "spright", "run", "examples.echo:app", "--port", "0"])
        try:
            deadline = time.monotonic() + 60
            while not [p for p in runtime_dir.glob(f"*/{NAME}") if p.parent != host_dir]:  # it started: swept
                assert inside.poll() is None and time.monotonic() < deadline, "the node in its namespace did not serve"
                time.sleep(0.05)
        finally:  # to the node, not to unshare (it ignores SIGTERM while it waits for its child)
            for child in children_of(inside.pid):
                os.kill(child, signal.SIGTERM)
            inside.wait(30)
        assert (host_dir / NAME).exists() and all(s.exists() for s in segments)
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/echo", data=b"x")) as r:
            assert r.read() == b"x"
