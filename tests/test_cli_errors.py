"""What ``spright`` says, and leaves behind, when something is wrong: as users run it, a subprocess."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.kit.nodes import spright


def said(text: str) -> str:
    """The output as one line: rich wraps long messages at the terminal's width."""
    return " ".join(text.split())


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's nodes keep their runtime directory (each starts empty)."""
    directory = tmp_path / "runtime"
    directory.mkdir()
    monkeypatch.setenv("SPRIGHT_RUNTIME_DIR", str(directory))
    return directory


@pytest.fixture
def without_grpc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spright subprocesses see no grpcio, as after a plain ``pip install spright``: a
    package of that name first on their path fails to import."""
    hidden = tmp_path / "hide" / "grpc"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('grpcio is hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hidden.parent), os.environ.get("PYTHONPATH")])))


def test_doctor_names_the_extra_that_installs_grpc(without_grpc: None) -> None:
    """The hint keeps its ``[grpc]``: rich markup used to eat it (``pip install 'spright'``)."""
    result = spright("doctor")
    assert result.returncode == 0, result.stderr
    assert "grpcio is not installed (pip install 'spright[grpc]')" in said(result.stdout)


def test_run_on_a_missing_transport_names_the_extra(without_grpc: None, runtime_dir: Path) -> None:
    result = spright("run", "examples.echo:app", "--transport", "grpc", "--port", "0")
    assert result.returncode == 2
    assert "grpcio is not installed (pip install 'spright[grpc]')" in said(result.stderr)


@pytest.mark.parametrize("problem", ["an unknown transport", "a port in use"])
def test_a_failed_start_leaves_no_runtime_directory(problem: str, runtime_dir: Path) -> None:
    """Else the next start removes it as one "left by a node that was killed"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        options = ["--transport", "nosuch", "--port", "0"] if problem == "an unknown transport" else ["--port", port]
        for start in ("first", "second"):
            result = spright("run", "examples.echo:app", *options)
            assert result.returncode == 2, (start, result.stderr)
            expected = "unknown transport 'nosuch'" if problem == "an unknown transport" else "address already in use"
            assert expected in said(result.stderr), (start, result.stderr)
            assert "killed" not in result.stderr, (start, result.stderr)
            assert list(runtime_dir.iterdir()) == [], start


@pytest.mark.parametrize(("source", "message"), [
    ("x = 1\n", "'noapp' defines no App: looked for a module-level spright.App (e.g. app = App(\"name\")) and "
                "found none"),
    ("from spright import App\nshop = App('shop')\nadmin = App('admin')\nalias = shop\n",
     "'noapp' defines 2 App objects (shop, admin): name the one to run, e.g. noapp:shop"),
    ("from spright import App\nshop = App('shop')\n",
     None),  # found: the routes command goes on (and says the app has no functions)
])
def test_a_module_without_one_app_says_what_it_looked_for_and_found(source: str, message: str | None,
                                                                    tmp_path: Path) -> None:
    module = tmp_path / "noapp.py"
    module.write_text(source)
    result = spright("routes", str(module))
    assert result.returncode == 2
    if message is None:
        assert "no functions" in said(result.stderr)
    else:
        assert said(result.stderr) == f"error: {message}"


def test_naming_a_missing_app_lists_the_apps_there(tmp_path: Path) -> None:
    (tmp_path / "noapp.py").write_text("from spright import App\nshop = App('shop')\nconfig = {}\n")
    for name, found in (("api", "no 'api'"), ("config", "'config' is a dict")):
        result = spright("routes", f"{tmp_path / 'noapp.py'}:{name}")
        assert result.returncode == 2
        assert said(result.stderr) == f"error: 'noapp' has no App named {name!r} ({found}); its App: noapp:shop"


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-cert", "x.crt"], "needs --tls-cert, --tls-key and --tls-ca together, got only --tls-cert"),
    (["--tls-cert", "/nonexistent/a.crt", "--tls-key", "/nonexistent/a.key", "--tls-ca", "/nonexistent/ca.crt"],
     "cannot load this node's TLS files (--tls-cert, --tls-key, --tls-ca)"),
])
def test_tls_files_that_cannot_serve_are_refused_at_start(args: list[str], message: str, runtime_dir: Path) -> None:
    done = spright("run", "tests.apps.remote:bank", "--port", "0", *args)
    assert done.returncode == 2 and message in said(done.stderr), done.stderr
    assert not list(runtime_dir.iterdir()), "refused before the node made anything"
