"""Revisions (spright.node.revisions): code reloaded under load with no request lost, broken
code refused with the old code serving on, canaries given their share of traffic, promoted
or rolled back, leaving no worker or template of the revision that left."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from spright.host.nodefile import DATA_DIR, runtime_base
from spright.ops.nodes import choose_node
from spright.testing import node_metric, run_node
from tests.kit.nodes import descendants_of, spright

pytestmark = pytest.mark.node
SOURCE = Path(__file__).parent / "apps" / "revised.py"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A copy of tests/apps/revised.py, the node's app (``revised:app``), for the test to edit."""
    shutil.copy(SOURCE, tmp_path / "revised.py")
    return tmp_path / "revised.py"


def edit(code: Path, old: str, new: str) -> None:
    text = code.read_text()
    assert old in text
    code.write_text(text.replace(old, new))


@pytest.fixture
def node(code: Path, runtime_dir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """(port, supervisor pid) of a node serving ``code`` on the data plane ``request.param``
    (skmsg unless parametrized)."""
    plane = getattr(request, "param", "skmsg")
    with run_node("revised:app", transport=plane, env={"PYTHONPATH": str(code.parent)}) as (port, process):
        yield port, process.pid


def get(port: int, path: str = "/") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, orjson.loads(reply.read())
    finally:
        connection.close()


def workers(pid: int) -> dict[int, str]:
    """The node's worker and template processes: pid -> the title it gives itself."""
    return {child: line for child, (_, line) in descendants_of(pid).items()
            if "spright: worker" in line or "spright: template" in line}


def templates(processes: dict[int, str]) -> int:
    return len([line for line in processes.values() if "spright: template" in line])


def said(completed: subprocess.CompletedProcess[str]) -> str:
    """What a command printed on stderr, rich's box and line breaks taken out."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", completed.stderr).split())


def until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.05)


class Load:
    """Clients sending GET / on keep-alive connections until stopped; every answer kept."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port, self.answers = port, []  # (status, version)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        until(lambda: len(self.answers) > 50, "the load is under way")
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self._stop.is_set():
            try:
                connection.request("GET", "/")
                reply = connection.getresponse()
                self.answers.append((reply.status, orjson.loads(reply.read()).get("version")))
            except (OSError, http.client.HTTPException) as exc:  # a reset, a closed connection
                self.failures.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.close()


@pytest.mark.parametrize("node", ["skmsg", "unix", "poll", "http", "grpc", "http --sidecar",
                                  "unix --worker-start spawn"], indirect=True)
def test_a_reload_under_load_loses_no_request_and_the_new_code_answers(node: tuple[int, int], code: Path) -> None:
    port, pid = node
    before = workers(pid)
    edit(code, 'VERSION = "v1"', 'VERSION = "v2"')
    with Load(port) as load:
        reloaded = spright("reload", "--port", str(port))
        assert reloaded.returncode == 0, reloaded.stderr
        assert "revision 2 serves" in reloaded.stdout
        sent = len(load.answers)
        until(lambda: len(load.answers) > sent + 100, "answers after the reload")
    assert not load.failures, load.failures[:5]
    assert {status for status, _ in load.answers} == {200}
    after = [version for _, version in load.answers[sent + 8:]]  # past what was in flight at the end
    assert set(after) == {"v2"}, Counter(after)
    assert Counter(version for _, version in load.answers)["v1"] > 0
    until(lambda: not set(before) & set(workers(pid)), "every old worker and the old template exited")
    assert templates(workers(pid)) == templates(before), "one (none when spawned): the new revision's"


def test_a_request_inside_a_handler_finishes_on_the_code_that_began_it(node: tuple[int, int], code: Path,
                                                                       tmp_path: Path) -> None:
    port, pid = node
    gate = runtime_base() / str(pid) / DATA_DIR / "gate"  # the workers' (they run unprivileged)
    answers: list[tuple[int, dict]] = []
    held = threading.Thread(target=lambda: answers.append(get(port, f"/?gate={gate}")))
    held.start()
    until(lambda: Path(f"{gate}.in").exists(), "the request is inside its handler")
    edit(code, 'VERSION = "v1"', 'VERSION = "v2"')
    reloaded = spright("reload", "target", "--port", str(port))
    assert reloaded.returncode == 0, reloaded.stderr
    assert get(port)[1]["version"] == "v2"
    gate.touch()
    held.join()
    assert answers[0][0] == 200 and answers[0][1]["version"] == "v1"


@pytest.mark.parametrize(("old", "new", "refusal"), [
    ('VERSION = "v2"', 'VERSION = "v2" +', "the new code does not load: SyntaxError"),
    ("import os", "import os\nimport no_such_module", "No module named 'no_such_module'"),
    ('app.route("/tally", tally)', 'app.route("/tally", tally)\napp.route("/new", tally)', "route GET /new is new"),
    ('app.route("/tally", tally)', "", "route GET /tally is gone"),
    ("@app.function(instances=2)", "@app.function(instances=3)", "function 'target' changed its settings"),
])
def test_a_reload_of_broken_code_is_refused_and_the_old_code_serves_on(node: tuple[int, int], code: Path,
                                                                       old: str, new: str, refusal: str) -> None:
    port, pid = node
    before = workers(pid)
    edit(code, 'VERSION = "v1"', 'VERSION = "v2"')
    edit(code, old, new)
    refused = spright("reload", "--port", str(port))
    assert refused.returncode == 2 and refusal in said(refused), refused.stderr
    assert get(port)[1]["version"] == "v1"
    assert workers(pid) == before, "no worker or template of the refused code is left"


def test_sighup_reloads_every_function(node: tuple[int, int], code: Path) -> None:
    port, pid = node
    edit(code, 'VERSION = "v1"', 'VERSION = "v2"')
    os.kill(pid, signal.SIGHUP)
    until(lambda: get(port)[1]["version"] == "v2" and get(port, "/tally")[1]["version"] == "v2",
          "SIGHUP reloaded the functions")


def canary_share(port: int, calls: int = 10_000) -> Counter[str]:
    status, versions = post(port, "/calls", str(calls))
    assert status == 200, versions
    return Counter(versions)


def post(port: int, path: str, body: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", path, body)
        reply = connection.getresponse()
        return reply.status, orjson.loads(reply.read())
    finally:
        connection.close()


def test_a_canary_takes_its_share_and_a_rollback_leaves_nothing_of_it(node: tuple[int, int], code: Path) -> None:
    port, pid = node
    before = workers(pid)
    shutil.copy(code, code.parent / "canary.py")
    edit(code.parent / "canary.py", 'VERSION = "v1"', 'VERSION = "canary"')
    started = spright("rollout", "target", "--module", "canary:app", "--traffic", "10", "--port", str(port))
    assert started.returncode == 0, started.stderr
    revisions = {row["role"]: row for row in choose_node(port=port).revisions["target"]}
    assert revisions["canary"]["app"] == "canary:app" and revisions["canary"]["share"] == 10
    shares = canary_share(port)
    assert sum(shares.values()) == 10_000 and 8 <= shares["canary"] / 100 <= 12, shares
    stats = orjson.loads(spright("stats", "--json", "--port", str(port)).stdout)
    side_by_side = {r["role"]: r for f in stats["functions"] if f["name"] == "target" for r in f["revisions"]}
    assert side_by_side["canary"]["handled"] == shares["canary"] and side_by_side["canary"]["revision"] == 2
    assert side_by_side["serving"]["handled"] >= shares["v1"]  # and the requests of the load before
    shown = spright("stats", "--port", str(port)).stdout
    assert "revisions" in shown and "canary:app" in shown
    assert node_metric(port, 'spright_revision_handled_total{domain="revised",function="target",revision="2"}') \
        == shares["canary"]
    assert spright("rollout", "target", "--traffic", "50", "--port", str(port)).returncode == 0
    shares = canary_share(port, 2_000)
    assert 40 <= shares["canary"] / 20 <= 60, shares
    scaled = spright("scale", "target", "1", "--port", str(port))
    assert scaled.returncode == 2 and "runs a canary" in scaled.stderr
    rolled_back = spright("rollout", "target", "--rollback", "--port", str(port))
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert canary_share(port, 1_000) == {"v1": 1_000}
    until(lambda: workers(pid) == before, "the canary's workers and template exited")
    assert [row["role"] for row in choose_node(port=port).revisions["target"]] == ["serving"]


def test_a_promoted_canary_serves_everything_and_the_old_revision_leaves(node: tuple[int, int], code: Path) -> None:
    port, pid = node
    before = workers(pid)
    edit(code, 'VERSION = "v1"', 'VERSION = "v2"')  # the node's own module, as it is now
    assert spright("rollout", "target", "--traffic", "25", "--port", str(port)).returncode == 0
    assert set(canary_share(port, 1_000)) == {"v1", "v2"}
    promoted = spright("rollout", "target", "--promote", "--port", str(port))
    assert promoted.returncode == 0 and "revision 2 serves" in promoted.stdout, promoted.stderr
    assert canary_share(port, 1_000) == {"v2": 1_000}
    assert get(port, "/tally")[1]["version"] == "v1", "only the function rolled out changed"
    until(lambda: not {p for p, line in before.items() if "target" in line} & set(workers(pid)),
          "the old revision's workers exited")
    assert templates(workers(pid)) == 2, "the first revision's serves tally"


def test_what_a_rollout_refuses(node: tuple[int, int]) -> None:
    port, _ = node
    for args, refusal in [
        (("tally", "--traffic", "10"), "stateful"),
        (("target", "--promote"), "runs no canary"),
        (("target",), "--traffic PERCENT"),
        (("nobody", "--traffic", "10"), "no function named 'nobody'"),
        (("target", "--promote", "--rollback"), "not both"),
        (("target", "--traffic", "150"), "less than or equal to 100"),
    ]:
        refused = spright("rollout", *args, "--port", str(port))
        assert refused.returncode == 2 and refusal in said(refused), (args, refused.stderr)


def test_a_reload_waits_for_the_revision_before_it_to_leave(node: tuple[int, int], code: Path,
                                                             tmp_path: Path) -> None:
    """The second reload starts in the slot whose old worker still drains a request (its
    endpoint is still its own): it waits until that worker left (drain_timeout), then serves."""
    port, pid = node
    gate = runtime_base() / str(pid) / DATA_DIR / "gate"  # never opened; the workers' directory
    answers: list[int] = []
    held = threading.Thread(target=lambda: answers.append(get(port, f"/?gate={gate}")[0]))
    held.start()
    until(lambda: Path(f"{gate}.in").exists(), "the request is inside its handler")
    for version in ("v2", "v3"):
        edit(code, 'VERSION = "v1"' if version == "v2" else 'VERSION = "v2"', f'VERSION = "{version}"')
        reloaded = spright("reload", "target", "--port", str(port))
        assert reloaded.returncode == 0 and f"revision {version[1]} serves" in reloaded.stdout, reloaded.stderr
    assert {get(port)[1]["version"] for _ in range(20)} == {"v3"}
    held.join()
    assert answers == [503], "cut off at the old worker's drain_timeout: answered then, not at the route's timeout"

