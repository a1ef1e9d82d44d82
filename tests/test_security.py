"""What a client or a function sends is data, never code; and a node is reachable from this
machine only unless told otherwise."""

from __future__ import annotations

import ast
import socket
import subprocess
from pathlib import Path

import pytest

from spright import Config
from spright.testing import run_node

ROOT = Path(__file__).resolve().parent.parent
# what turns bytes into code or arbitrary objects
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
YAML_WRITERS = {"safe_dump", "safe_dump_all"}  # `spright deploy` writes manifests; nothing reads YAML
# The one place the framework unpickles: a worker forked from the node's template reads its
# WorkerSpec from a pipe only its supervisor writes, as multiprocessing's spawn hands each spawned
# process its object. What the node's own supervisor sends, never a client or a function.
SUPERVISOR_HANDOFF = {"spright/node/template.py imports pickle"}


def _problems(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and [alias.name for alias in node.names] == ["PickleBuffer"]:
                continue  # a buffer wrapper (ctx.body's fence): nothing is unpickled through it
            found += [f"{path}:{node.lineno} imports {name}" for name in names
                      if name.split(".")[0] in FORBIDDEN_MODULES]
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                found += [f"{path}:{node.lineno} imports yaml.{alias.name}" for alias in node.names
                          if alias.name not in YAML_WRITERS]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml":
            if node.attr not in YAML_WRITERS:
                found.append(f"{path}:{node.lineno} uses yaml.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_BUILTINS:
            found.append(f"{path}:{node.lineno} calls {node.func.id}")
    return found


def test_nothing_received_is_unpickled_or_evaluated() -> None:
    """The framework and the apps parse what they receive with orjson, httptools and the
    descriptor struct only: no pickle, marshal or YAML loader (``spright deploy`` only writes
    YAML), no eval or exec anywhere; the one exception is the supervisor's own hand-off of a
    forked worker's spec (``SUPERVISOR_HANDOFF``)."""
    problems = [problem for package in ("spright", "apps") for path in sorted((ROOT / package).rglob("*.py"))
                for problem in _problems(path)]
    handoff = [p for p in problems if f"{Path(p.split(':')[0]).relative_to(ROOT)} {p.split(' ', 1)[1]}"
               in SUPERVISOR_HANDOFF]
    assert len(handoff) == len(SUPERVISOR_HANDOFF)  # still there: else the exception goes
    assert [p for p in problems if p not in handoff] == []


def test_the_check_above_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import pickle\nfrom yaml import load\napp.compile()\neval('1')\norjson.loads(b'1')\n"
                      "import yaml\nyaml.safe_dump({})\nyaml.load(text)\nfrom pickle import PickleBuffer\n"
                      "from pickle import PickleBuffer, loads\n")
    assert sorted(p.split(" ", 1)[1] for p in _problems(sample)) == [
        "calls eval", "imports pickle", "imports pickle", "imports yaml.load", "uses yaml.load"]


def _outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("127."):
            return address
    return None


@pytest.mark.node
def test_a_node_listens_on_loopback_unless_told_otherwise(runtime_dir: Path) -> None:
    assert Config().host == "127.0.0.1"
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback")
    with run_node("tests.apps.slow:app") as (port, _):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, port), timeout=5)
    with run_node("tests.apps.slow:app", args=("--host", "0.0.0.0")) as (port, _):
        socket.create_connection((outside, port), timeout=5).close()
