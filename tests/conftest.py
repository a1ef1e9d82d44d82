import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from spright import native
from spright.testing import run_node
from spright.transport import registry
from spright.transport.ingress import unavailable_reason as ingress_unavailable
from spright.transport.skmsg import SkmsgTransport
from tests.kit.dataplane import make_node, make_table, started, transport_cls  # noqa: F401 (the contract suite's fixtures)

# Tests marked ``kernel`` need the eBPF data plane. Where this machine cannot run it they are
# skipped with the reason, unless SPRIGHT_REQUIRE_SKMSG=1 (CI, as root, where it must work):
# then each of them fails (an error at setup) with the reason, so a broken ebpf/skmsg.c cannot pass as "skipped".
REQUIRE_ALL = os.environ.get("SPRIGHT_REQUIRE_ALL") == "1"
REQUIRE_SKMSG = REQUIRE_ALL or os.environ.get("SPRIGHT_REQUIRE_SKMSG") == "1"
SKMSG_UNAVAILABLE = SkmsgTransport.unavailable_reason()
# Tests marked ``needs(COMPONENT)`` use a real component beyond Python: skipped with the reason
# where it is missing, failed instead under SPRIGHT_REQUIRE_ALL=1 (CI installs every one of them).
COMPONENTS = {
    "root": lambda: None if os.geteuid() == 0 else "needs root",
    "netns": lambda: None if os.geteuid() == 0 and shutil.which("ip") and shutil.which("unshare")
    else "needs root, ip(8) and unshare(1) for namespaces",
    "redis": lambda: None if shutil.which("redis-server") else "redis-server is not installed (make setup installs it)",
    "nginx": ingress_unavailable,
    "locust": lambda: None if importlib.util.find_spec("locust") else "locust is not installed (the test extra)",
    "chromium": lambda: None if importlib.util.find_spec("playwright") and shutil.which("chromium")
    else "Debian chromium and playwright are not installed (make setup installs them)",
    # the hot path built by `make setup` (spright/native.py); SPRIGHT_PURE=1 runs say so in the test
    "compiled": lambda: None if native.STATE == "compiled" or os.environ.get("SPRIGHT_PURE") == "1"
    else f"the hot path is not compiled: {native.STATE}",
}
# Nodes on the poll (D-SPRIGHT) data plane run adaptive here: a node of four busy-polling
# processes on a 2-core machine would measure the scheduler, not the behaviour under test.
# Spinning for ever is covered in process by test_contract and measured by bench/.
os.environ.setdefault("SPRIGHT_POLL_IDLE_US", "200")


def pytest_report_header() -> str:
    state = f"unavailable: {SKMSG_UNAVAILABLE}" if SKMSG_UNAVAILABLE else "available"
    return f"skmsg data plane: {state}" + (" (required: SPRIGHT_REQUIRE_SKMSG=1)" if REQUIRE_SKMSG else "")


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the ``transport`` fixture runs a real node (a ``node`` test); one
    parametrized over the skmsg transport (here, or by test_contract's ids) is a ``kernel`` test."""
    for item in items:
        if "transport" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.node)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "skmsg" in callspec.id.split("-"):
            item.add_marker(pytest.mark.kernel)


@pytest.hookimpl(tryfirst=True)  # before fixtures start nodes, and before other skip marks
def pytest_runtest_setup(item: pytest.Item) -> None:
    if SKMSG_UNAVAILABLE and item.get_closest_marker("kernel") is not None:
        if REQUIRE_SKMSG:
            pytest.fail(f"SPRIGHT_REQUIRE_SKMSG=1 but skmsg is unavailable: {SKMSG_UNAVAILABLE}", pytrace=False)
        pytest.skip(f"skmsg unavailable: {SKMSG_UNAVAILABLE}")
    for marker in item.iter_markers("needs"):
        for component in marker.args:
            missing = COMPONENTS[component]()
            if missing and REQUIRE_ALL:
                pytest.fail(f"SPRIGHT_REQUIRE_ALL=1 but {component} is missing: {missing}", pytrace=False)
            if missing:
                pytest.skip(missing)


def transports() -> list:
    """Every transport users can pick, and http with its sidecars. skmsg runs are ``kernel``
    tests (skipped or failed by the hook above); another transport this machine cannot run
    is skipped with its reason."""
    params = []
    for name, cls in registry().items():
        if name == "skmsg":
            marks = [pytest.mark.kernel]
        else:
            reason = cls.unavailable_reason()
            marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return [*params, pytest.param("http --sidecar", id="http+sidecar")]


@pytest.fixture(params=transports(), scope="module")
def transport(request: pytest.FixtureRequest) -> str:
    """The data plane of the real node a test starts (every test taking it is a ``node`` test)."""
    return request.param


@pytest.fixture(scope="module")
def runtime_dir():
    """This module's nodes announce themselves in their own directory (SPRIGHT_RUNTIME_DIR), so
    nodes other tests or users run on this machine never make the choice ambiguous. Not under
    pytest's temporary directory (root's, 0700): the workers, unprivileged, reach their node's
    data directory by its path, as they do under /run/spright."""
    before = os.environ.get("SPRIGHT_RUNTIME_DIR")
    base = Path(tempfile.mkdtemp(prefix="spright-tests-"))
    base.chmod(0o711)  # searchable, not listable
    os.environ["SPRIGHT_RUNTIME_DIR"] = str(base)
    yield base
    shutil.rmtree(base, ignore_errors=True)
    if before is None:
        del os.environ["SPRIGHT_RUNTIME_DIR"]
    else:
        os.environ["SPRIGHT_RUNTIME_DIR"] = before


@pytest.fixture(scope="module")
def domains_node(transport: str, runtime_dir: Path) -> Iterator[int]:
    """The port of a real node serving tests/apps/domains.py (two security domains)."""
    with run_node("tests.apps.domains:app", transport=transport) as (port, _):
        yield port


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SkmsgTransport]:
    """A started sk_msg data plane: functions f1..f5, chains (1 2 3), (3), (2 1 2 4)."""
    t = started(SkmsgTransport(tmp_path, make_table(5, chains=[[1, 2, 3], [3], [2, 1, 2, 4]])))
    yield t
    t.stop()


@pytest.fixture
def app_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``app_database("parking")``: that app's SQLite file (SPRIGHT_<APP>_DB) is a fresh one of
    this test's; returns its path."""

    def use(app: str) -> Path:
        path = tmp_path / f"{app}.sqlite3"
        monkeypatch.setenv(f"SPRIGHT_{app.upper()}_DB", str(path))
        return path

    return use
