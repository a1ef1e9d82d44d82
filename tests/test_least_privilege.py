"""Workers run as an unprivileged user (spright run --user; spright/host/sandbox.py ``drop_to``):
every worker process and every thread of it, on every data plane, for every instance and
every revision; requests and calls still work; a hostile handler can no longer do what root
could; ``--user root`` keeps root, saying so."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import tempfile
import urllib.request
from pathlib import Path

import pytest

from spright.data.config import Config
from spright.host.nodefile import runtime_base
from spright.host.sandbox import unreadable, workers_user
from spright.node import control
from spright.ops.nodes import choose_node
from spright.testing import run_node
from tests.kit.nodes import spright

pytestmark = [pytest.mark.node, pytest.mark.needs("root")]  # only root has someone to drop to
APP = "tests.apps.privileges:app"


def expected_ids() -> tuple[int, int]:
    """The default user's: ``spright`` when make setup created it, else ``nobody``."""
    for name in ("spright", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise LookupError("neither spright nor nobody exists")


def threads(pid: int) -> dict[str, dict[str, str]]:
    """Per thread of ``pid``: its status fields."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        lines = (task / "status").read_text().splitlines()
        found[task.name] = {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}
    return found


def assert_unprivileged(pid: int, uid: int, gid: int) -> None:
    for tid, status in threads(pid).items():
        assert status["Uid"].split() == [str(uid)] * 4, f"thread {tid} of {pid}: Uid {status['Uid']}"
        assert status["Gid"].split() == [str(gid)] * 4, f"thread {tid} of {pid}: Gid {status['Gid']}"
        assert status["Groups"] == "", f"thread {tid} of {pid} keeps groups {status['Groups']}"
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0, f"thread {tid} of {pid}: {status}"
        assert status["NoNewPrivs"] == "1", f"thread {tid} of {pid} may gain privileges (execve of a setuid file)"


def request(port: int, path: str, body: object = None) -> tuple[int, bytes]:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    call = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="GET" if data is None else "POST")
    with urllib.request.urlopen(call, timeout=30) as reply:
        return reply.status, reply.read()


@pytest.fixture(scope="module")
def root_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file root may read and nobody else: 0600, in a directory anyone may search."""
    directory = tmp_path_factory.mktemp("secret")
    directory.chmod(0o755)
    path = directory / "secret"
    path.write_text("root's")
    path.chmod(0o600)
    return path


def test_every_worker_and_thread_runs_unprivileged_and_requests_work(transport: str, runtime_dir: Path,
                                                                    root_file: Path) -> None:
    uid, gid = expected_ids()
    with run_node(APP, transport=transport) as (port, node):
        assert request(port, "/chain", b"x") == (200, b"x12"), "a chain"
        status, called = request(port, "/call")
        assert status == 200
        assert json.loads(called)["probe"]["uids"] == [uid] * 3, "a ctx.call"
        status, met = request(port, "/probe", {"path": str(root_file), "kill": node.pid})
        assert status == 200
        assert json.loads(met) == {**json.loads(met), "open": "PermissionError", "kill": "PermissionError"}, met
        workers = choose_node(port=port).workers
        assert set(workers) == {"probe", "first", "second", "caller"}
        for pid in workers.values():
            assert_unprivileged(pid, uid, gid)
        assert threads(node.pid)[str(node.pid)]["Uid"].split() == ["0"] * 4, "the gateway stays root"
        assert oct(os.stat(root_file).st_mode & 0o777) == "0o600"


def test_user_root_keeps_root_and_says_so(runtime_dir: Path, root_file: Path) -> None:
    with tempfile.TemporaryFile() as log:
        with run_node(APP, transport="unix", args=("--user", "root"), log=log) as (port, node):
            status, met = request(port, "/probe", {"path": str(root_file), "kill": node.pid})
        assert status == 200
        assert json.loads(met)["uids"] == [0, 0, 0]
        assert json.loads(met)["open"] == "root's" and json.loads(met)["kill"] == "signalled"
        log.seek(0)
        assert "runs as root: a compromised handler is root" in log.read().decode(errors="replace")


async def test_a_scaled_up_instance_and_a_reload_run_unprivileged(runtime_dir: Path) -> None:
    uid, gid = expected_ids()
    with run_node(APP, transport="unix") as (port, node):
        directory = runtime_base() / str(node.pid)
        answer = await asyncio.to_thread(control.request, directory, {"scale": "probe", "instances": 2})
        assert answer == {"instances": 2}
        scaled = choose_node(port=port).workers
        assert "probe#1" in scaled
        assert_unprivileged(scaled["probe#1"], uid, gid)
        before = set(scaled.values())
        reloaded = await asyncio.to_thread(spright, "reload", "--port", str(port))
        assert reloaded.returncode == 0, reloaded.stderr
        assert "serves" in reloaded.stdout
        after = choose_node(port=port).workers
        new = set(after.values()) - before
        assert new, f"the reload started no worker: {after}"
        for pid in new:
            assert_unprivileged(pid, uid, gid)
        assert request(port, "/chain", b"y") == (200, b"y12")


def test_workers_keep_root_when_their_user_cannot_read_the_app_and_an_explicit_user_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    """A worker imports and reads the app after its drop: an app only root can read (a checkout
    under a 0700 directory) keeps its workers root, said once; ``--user`` for such an app is a
    startup error naming what that user cannot read."""
    with tempfile.TemporaryDirectory() as base:  # /tmp's: searchable by everyone, unlike pytest's
        Path(base).chmod(0o711)
        check_what_workers_read(Path(base) / "closed", caplog)


def test_workers_keep_root_when_their_user_cannot_reach_the_runtime_base(caplog: pytest.LogCaptureFixture) -> None:
    """The node's runtime directory (and the app's data in it) under a directory the workers'
    user cannot search (a SPRIGHT_RUNTIME_DIR in root's 0700 temporary directory): root too."""
    readable = [str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory() as base:
        Path(base).chmod(0o700)
        with caplog.at_level("WARNING", logger="spright"):
            assert workers_user(Config(), readable, Path(base) / "nodes") == "root"
        assert f"cannot read {Path(base).resolve()}" in caplog.text
        Path(base).chmod(0o711)
        assert workers_user(Config(), readable, Path(base) / "nodes") is None  # (nodes/: made later)


def check_what_workers_read(hidden: Path, caplog: pytest.LogCaptureFixture) -> None:
    hidden.mkdir(mode=0o700)
    app_file = hidden / "app.py"
    app_file.write_text("")
    app_file.chmod(0o644)
    assert unreadable([str(app_file)], "nobody") == str(hidden.resolve())
    hidden.chmod(0o711)
    assert unreadable([str(app_file)], "nobody") is None
    app_file.chmod(0o600)
    assert unreadable([str(app_file)], "nobody") == str(app_file.resolve())
    with caplog.at_level("WARNING", logger="spright"):
        assert workers_user(Config(), [str(app_file)], hidden) == "root"
    assert "the workers keep root" in caplog.text and str(app_file.resolve()) in caplog.text
    with pytest.raises(ValueError, match=f"--user nobody: that user cannot read {app_file.resolve()}"):
        workers_user(Config(user="nobody"), [str(app_file)], hidden)
    app_file.chmod(0o644)
    assert workers_user(Config(user="nobody"), [str(app_file)], hidden) == "nobody"
