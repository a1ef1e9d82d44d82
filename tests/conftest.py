import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from spright.transport import registry
from spright.transport.skmsg import SkmsgTransport
from tests.skmsg_kit import make_table


def transports() -> list:
    """Every transport users can pick; one that this machine cannot run is skipped with its reason."""
    params = []
    for name, cls in registry().items():
        reason = cls.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=transports(), scope="module")
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory):
    """This module's nodes announce themselves in their own directory (SPRIGHT_RUNTIME_DIR), so
    nodes other tests or users run on this machine never make the choice ambiguous."""
    before = os.environ.get("SPRIGHT_RUNTIME_DIR")
    os.environ["SPRIGHT_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("runtime"))
    yield Path(os.environ["SPRIGHT_RUNTIME_DIR"])
    if before is None:
        del os.environ["SPRIGHT_RUNTIME_DIR"]
    else:
        os.environ["SPRIGHT_RUNTIME_DIR"] = before


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SkmsgTransport]:
    """A started sk_msg data plane: functions f1..f5, chains (1 2 3), (3), (2 1 2 4)."""
    t = SkmsgTransport(tmp_path, make_table(5, chains=[[1, 2, 3], [3], [2, 1, 2, 4]]))
    t.start()
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
