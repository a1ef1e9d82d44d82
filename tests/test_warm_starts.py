"""Warm starts (spright/node/template.py): workers fork from the node's template process, which
imported the app once. Each is a process of its own with its own random state, in its own
domain's sandbox, and dies with the node; ``--worker-start spawn`` still starts them afresh, as
does a node whose app starts a thread at import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from spright.data.tracecontext import new_span_id
from spright.host.nodefile import runtime_base
from spright.ops.nodes import choose_node
from spright.testing import free_port, node_metric, run_node
from tests import test_isolation
from tests.kit.nodes import children_of, proc_stat, wait_node_file

pytestmark = pytest.mark.node


def answers(port: int, path: str = "/fn", distinct: int = 2) -> list[dict]:
    """Answers from ``distinct`` different worker processes (requests alternate between idle instances)."""
    seen: dict[int, dict] = {}
    for _ in range(50):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            answer = json.loads(reply.read())
        seen.setdefault(answer["pid"], answer)
        if len(seen) == distinct:
            return list(seen.values())
    raise AssertionError(f"{len(seen)} instances answered 50 requests, not {distinct}")


def template_of(supervisor: int) -> int:
    (template,) = [pid for pid, (_, command) in children_of(supervisor).items() if "spright: template" in command]
    return template


def test_workers_fork_from_the_template_each_its_own_process(runtime_dir: Path) -> None:
    with run_node("tests.apps.warm:app", args=("--instances", "fn=2")) as (port, node):
        template = template_of(node.pid)
        one, two = answers(port)
        assert one["pid"] != two["pid"] and one["parent"] == two["parent"] == template, "separate, forked from it"
        assert one["imported_by"] == two["imported_by"] == template, "the app was imported once, in the template"
        assert one["token"] == two["token"]
        assert one["random"] != two["random"], "random is re-seeded in each worker"
        assert one["span"] != two["span"], "and so are spright's trace ids"
        assert {one["pid"], two["pid"]} == set(choose_node(port=port).workers.values())
        # it holds no thread and never loaded bcc; its only socket is its channel to the supervisor
        assert os.listdir(f"/proc/{template}/task") == [str(template)]
        mapped = {line.split()[5] for line in Path(f"/proc/{template}/maps").read_text().splitlines()
                  if len(line.split()) > 5}  # the files mapped (addresses may spell "bcc" in hex)
        assert not [path for path in mapped if "bcc" in Path(path).name or "/bcc/" in path], "bcc is not loaded"
        sockets = [fd for fd in os.listdir(f"/proc/{template}/fd")
                   if os.readlink(f"/proc/{template}/fd/{fd}").startswith("socket:")]
        assert len(sockets) == 1, sockets
    assert proc_stat(template) is None or proc_stat(template)[0] == "Z", "the template goes with the node"


def test_spawned_workers_import_the_app_each(runtime_dir: Path) -> None:
    with run_node("tests.apps.warm:app", args=("--instances", "fn=2", "--worker-start", "spawn")) as (port, node):
        one, two = answers(port)
        assert one["parent"] == two["parent"] == node.pid, "children of the supervisor"
        assert (one["imported_by"], two["imported_by"]) == (one["pid"], two["pid"]), "each imported the app"
        assert not [c for _, c in children_of(node.pid).values() if "spright: template" in c], "no template"


def test_an_app_that_starts_threads_at_import_is_spawned(runtime_dir: Path) -> None:
    with run_node("tests.apps.threaded:app") as (port, node):
        (answer,) = answers(port, distinct=1)
        assert answer["parent"] == node.pid, "spawned by the supervisor: forking would lose the thread"
        assert not [c for _, c in children_of(node.pid).values() if "spright: template" in c]


def test_a_killed_supervisor_takes_the_template_and_its_workers(runtime_dir: Path) -> None:
    killed = subprocess.Popen([sys.executable, "-m", "spright", "run", "tests.apps.warm:app", "--port",
                               str(free_port()), "--instances", "fn=2", "--transport", "unix"],
                              stderr=subprocess.DEVNULL)
    info = wait_node_file(runtime_base() / str(killed.pid), killed)
    template = template_of(killed.pid)
    workers = list(info.workers.values())
    assert all(proc_stat(pid)[1] == template for pid in workers)  # type: ignore[index]
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    deadline = time.monotonic() + 10
    while any((s := proc_stat(pid)) is not None and s[0] != "Z" for pid in [template, *workers]):
        assert time.monotonic() < deadline, "the template or a worker outlived the supervisor"
        time.sleep(0.05)


@pytest.mark.needs("root")
@pytest.mark.parametrize("worker_start", ["fork", "spawn"])
def test_sealed_whichever_way_a_worker_starts(worker_start: str, runtime_dir: Path) -> None:
    """tests/test_isolation.py's check of a hostile function, on workers forked and spawned."""
    with run_node("tests.apps.domains:app", transport="unix",
                  args=("--worker-start", worker_start, "--trace-sample", "1")) as (port, node):  # span rings too
        parents = {proc_stat(pid)[1] for pid in choose_node(port=port).workers.values()}  # type: ignore[index]
        assert parents == ({template_of(node.pid)} if worker_start == "fork" else {node.pid})
        test_isolation.test_a_function_cannot_open_another_domains_memory("unix", port)


def test_trace_ids_are_reseeded_in_a_forked_child() -> None:
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(writer, new_span_id().to_bytes(8, "big"))
        os._exit(0)
    os.close(writer)
    child = int.from_bytes(os.read(reader, 8), "big")
    os.close(reader)
    os.waitpid(pid, 0)
    assert child != new_span_id()


def test_workers_of_a_killed_template_restart_spawned(runtime_dir: Path) -> None:
    with run_node("tests.apps.warm:app", args=("--instances", "fn=2")) as (port, node):
        template = template_of(node.pid)
        forked = [answer["pid"] for answer in answers(port)]
        os.kill(template, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:  # they die with it, and the supervisor restarts them, spawned now
            workers = set(choose_node(port=port).workers.values())
            if (not workers & set(forked) and all((s := proc_stat(pid)) and s[1] == node.pid for pid in workers)
                    and node_metric(port, 'spright_instances{domain="warm",function="fn"}') == 2):
                break
            assert time.monotonic() < deadline, f"workers {workers} (forked: {forked}) were not restarted spawned"
            time.sleep(0.1)
        assert {answer["parent"] for answer in answers(port)} == {node.pid}
