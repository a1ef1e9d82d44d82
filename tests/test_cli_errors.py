"""What ``spright`` says, and leaves behind, when something is wrong: as users run it, a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import spright


def said(text: str) -> str:
    """The output as one line: rich wraps long messages at the terminal's width."""
    return " ".join(text.split())


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
