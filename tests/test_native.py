"""The compiled hot path (spright/native.py): a node runs the mypyc extensions where they are
built and current, and the Python sources otherwise (SPRIGHT_PURE=1, no build, a stale build),
all of them one way. What runs is read from the processes' own memory maps: the compiled
modules live in one shared library (mypyc's group), which a process maps once it runs any of
them (the modules' own small extension files are only loaded when imported from Python)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from spright import native
from spright.ops import tuning
from spright.testing import run_node
from tests.kit.nodes import node_file


def compiled_code() -> set[str]:
    """The build's shared library, the one file a process running compiled code maps."""
    return {str(native.library())}


def mapped(pid: int) -> set[str]:
    """The files process ``pid`` has mapped: the extension modules it loaded among them."""
    return {line.split(maxsplit=5)[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if len(line.split(maxsplit=5)) == 6}


def echo_through(port: int) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/echo", data=b"native", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


@pytest.mark.needs("compiled")
def test_a_node_runs_the_compiled_hot_path(runtime_dir: Path) -> None:
    if os.environ.get("SPRIGHT_PURE") == "1":
        pytest.skip("SPRIGHT_PURE=1: this run checks the Python sources")
    with run_node("examples.echo:app") as (port, process):
        assert echo_through(port) == b"native"
        worker = next(iter(node_file(process.pid).workers.values()))
        gateway_maps, worker_maps = mapped(process.pid), mapped(worker)
    assert compiled_code() <= gateway_maps and compiled_code() <= worker_maps
    assert tuning.latency_hints()[2] == ("hot path", True, f"{len(native.MODULES)} modules compiled with mypyc")


@pytest.mark.needs("compiled")
def test_the_compiled_hot_path_imports_from_any_directory(tmp_path: Path) -> None:
    """Not only from the checkout's top: `spright run` is started from anywhere (the shared
    library once sat at the checkout's top, where only a process started there found it)."""
    if os.environ.get("SPRIGHT_PURE") == "1":
        pytest.skip("SPRIGHT_PURE=1: this run checks the Python sources")
    done = subprocess.run([sys.executable, "-c", "import spright.native, spright.worker.runtime as r; "
                           "print(spright.native.STATE, r.__file__)"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["compiled", str(native.extension("spright.worker.runtime"))]


def test_spright_pure_runs_every_module_from_its_source(runtime_dir: Path) -> None:
    with run_node("examples.echo:app", env={"SPRIGHT_PURE": "1"}) as (port, process):
        assert echo_through(port) == b"native"
        worker = next(iter(node_file(process.pid).workers.values()))
        loaded = mapped(process.pid) | mapped(worker)
    assert not {str(native.extension(m)) for m in native.MODULES} & loaded
    assert not [path for path in loaded if "__mypyc" in path]


def test_a_build_runs_only_while_whole_and_newer_than_every_source(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "ROOT", tmp_path)
    monkeypatch.delenv("SPRIGHT_PURE", raising=False)
    for module in native.MODULES:
        native.source(module).parent.mkdir(parents=True, exist_ok=True)
        native.source(module).write_text("")
        os.utime(native.source(module), (1000, 1000))
    assert native.state() == "pure (not built: make setup compiles it)"
    for module in native.MODULES[1:]:
        native.extension(module).write_bytes(b"")
    assert native.state() == f"pure (partly built: {native.MODULES[0]} missing)"
    native.extension(native.MODULES[0]).write_bytes(b"")
    assert native.state() == f"pure (partly built: {native.library().name} missing)"
    native.library().write_bytes(b"")
    for module in native.MODULES:
        os.utime(native.extension(module), (2000, 2000))
    assert native.state() == "compiled"
    os.utime(native.source(native.MODULES[-1]), (3000, 3000))  # edited after the build
    assert native.state().startswith(f"pure (stale build: {native.MODULES[-1]} changed since")
    monkeypatch.setenv("SPRIGHT_PURE", "1")
    assert native.state() == "pure (SPRIGHT_PURE=1)"
