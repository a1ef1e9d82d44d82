"""``spright run --reload`` (spright.node.watch): a saved change is served without a restart,
broken code is refused with the old code serving on, and only the functions whose module
changed get new workers."""

from __future__ import annotations

import http.client
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from spright import App
from spright.node import watch
from spright.node.loader import handler_files
from spright.ops.nodes import choose_node
from spright.testing import run_node
from tests.kit.nodes import spright
from tests.test_revisions import SOURCE, edit, until


def get(port: int, path: str = "/") -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        assert reply.status == 200
        return orjson.loads(reply.read())
    finally:
        connection.close()


def node_log(pid: int) -> str:
    """What the node wrote on stderr so far (run_node keeps it in an unlinked file)."""
    return Path(f"/proc/{pid}/fd/2").read_text(errors="replace")


def revision(port: int, function: str) -> int:
    return next(row["revision"] for row in choose_node(port=port).revisions[function] if row["role"] == "serving")


@pytest.fixture
def reloading(tmp_path: Path, runtime_dir: Path) -> Iterator[tuple[Path, int, int]]:
    """(the app's file, port, supervisor pid) of a node run with --reload on a copy of
    tests/apps/revised.py."""
    code = tmp_path / "revised.py"
    shutil.copy(SOURCE, code)
    with run_node("revised:app", args=("--reload",), env={"PYTHONPATH": str(tmp_path)}) as (port, process):
        yield code, port, process.pid


@pytest.mark.node
def test_a_saved_change_is_served_and_broken_code_is_refused_until_fixed(reloading: tuple[Path, int, int]) -> None:
    code, port, pid = reloading
    assert get(port)["version"] == "v1"
    edit(code, 'VERSION = "v1"', 'VERSION = "v2"')
    until(lambda: get(port)["version"] == "v2", "the saved change serves")
    until(lambda: get(port, "/tally")["version"] == "v2", "every function of the app's own module reloaded")
    until(lambda: revision(port, "target") == 2, "node.json says revision 2 serves")

    edit(code, 'VERSION = "v2"', 'VERSION = "v2" +')
    until(lambda: "reload was refused" in node_log(pid), "the refusal is logged")
    refusal = next(line for line in node_log(pid).splitlines() if "reload was refused" in line)
    assert str(code) in refusal and "SyntaxError" in refusal, refusal
    assert get(port)["version"] == "v2", "the old code serves on"
    assert revision(port, "target") == 2

    edit(code, 'VERSION = "v2" +', 'VERSION = "v3"')
    until(lambda: get(port)["version"] == "v3", "the fixed code serves")
    until(lambda: revision(port, "target") == 3, "node.json says revision 3 serves")


APP = '''
    import os

    import helper
    import there
    from spright import App

    app = App("split")


    @app.function()
    async def here(ctx):
        return {"version": "here-v1", "helper": helper.VERSION, "pid": os.getpid()}


    elsewhere = app.function(there.there)
    app.route("/here", here)
    app.route("/there", elsewhere)
'''
THERE = '''
    import os

    import helper

    VERSION = "there-v1"


    async def there(ctx):
        return {"version": VERSION, "helper": helper.VERSION, "pid": os.getpid()}
'''


@pytest.fixture
def split(tmp_path: Path, runtime_dir: Path) -> Iterator[tuple[Path, int]]:
    """(the app's directory, port) of a node run with --reload on an app of three modules:
    split.py (the app, and handler ``here``), there.py (handler ``there``) and helper.py."""
    (tmp_path / "split.py").write_text(textwrap.dedent(APP))
    (tmp_path / "there.py").write_text(textwrap.dedent(THERE))
    (tmp_path / "helper.py").write_text('VERSION = "helper-v1"\n')
    with run_node("split:app", args=("--reload",), env={"PYTHONPATH": str(tmp_path)}) as (port, _):
        yield tmp_path, port


@pytest.mark.node
def test_only_the_function_whose_module_changed_reloads_and_a_helper_reloads_every_one(
        split: tuple[Path, int]) -> None:
    directory, port = split
    before = choose_node(port=port).workers
    edit(directory / "there.py", 'VERSION = "there-v1"', 'VERSION = "there-v2"')
    until(lambda: get(port, "/there")["version"] == "there-v2", "there's change serves")
    assert get(port, "/there")["pid"] != before["there"]
    until(lambda: revision(port, "there") == 2, "node.json says there's revision 2 serves")
    assert revision(port, "here") == 1, "here's module did not change"
    assert choose_node(port=port).workers["here"] == before["here"] == get(port, "/here")["pid"], \
        "here's worker serves on"

    edit(directory / "helper.py", "helper-v1", "helper-v2")
    until(lambda: get(port, "/here")["helper"] == "helper-v2" and get(port, "/there")["helper"] == "helper-v2",
          "a helper's change reloads every function")
    assert get(port, "/here")["pid"] != before["here"]
    until(lambda: revision(port, "here") == revision(port, "there") == 3, "node.json says revision 3 serves both")


@pytest.mark.node
def test_reload_is_refused_for_a_node_whose_workers_start_on_their_own(tmp_path: Path) -> None:
    refused = spright("gateway", "tests.apps.revised:app", "--node-dir", str(tmp_path), "--reload")
    assert refused.returncode == 2 and "--reload is for `spright run`" in " ".join(refused.stderr.split()), \
        refused.stderr


def test_a_change_maps_to_the_functions_whose_handler_is_in_the_file(tmp_path: Path) -> None:
    from tests.apps import revised

    app = App("mapped")
    app.function(revised.target.handler)
    app.function(revised.tally.handler)
    app.function(textwrap.dedent)  # another module's
    files = handler_files(app.functions)
    assert files["target"] == files["tally"] == SOURCE.resolve()
    ours = Path(revised.__file__)
    assert watch.to_reload([ours], files) == ["target", "tally"]
    assert watch.to_reload([Path(textwrap.__file__)], files) == ["dedent"]
    assert watch.to_reload([ours, tmp_path / "helper.py"], files) == [], "a file no handler is in: every function"
    assert watch.source_dir("tests.apps.revised:app") == SOURCE.parent.resolve()
    assert watch.source_dir(f"{SOURCE}:app") == SOURCE.parent.resolve()


def test_what_the_watcher_ignores(tmp_path: Path) -> None:
    (tmp_path / "venvish").mkdir()
    (tmp_path / "venvish" / "pyvenv.cfg").touch()
    assert not watch.ignored(tmp_path / "app.py", tmp_path)
    assert not watch.ignored(tmp_path / "pkg" / "sub" / "mod.py", tmp_path)
    for path in ("notes.txt", "app.pyc", ".app.py", "__pycache__/app.py", ".git/hook.py", ".venv/lib/x.py",
                 "venv/lib/x.py", "venvish/lib/x.py", "pkg/.hidden/x.py"):
        assert watch.ignored(tmp_path / path, tmp_path), path
    assert watch.ignored(Path("/elsewhere/app.py"), tmp_path)
