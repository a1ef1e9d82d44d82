"""What `pip install spright` puts on a user's machine: the framework, not the demo apps."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_holds_spright_only_and_needs_no_template_engine(tmp_path: Path) -> None:
    """A top-level ``apps`` package in the wheel would collide with a user's own ``apps/``,
    and jinja2 is the boutique's, not the framework's (it is in the ``apps`` extra)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("spright-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = Parser().parsestr(archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"spright"}, tops
    assert "spright/transport/skmsg.c" in names, "the eBPF program's source ships with the package"
    requires = metadata.get_all("Requires-Dist") or []
    assert not [r for r in requires if r.startswith("jinja2") and "extra ==" not in r], requires
    assert [r for r in requires if r.startswith("jinja2") and 'extra == "apps"' in r], requires
