"""The architecture as written down is the architecture in the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_module_map_in_architecture_md_is_the_packages_own() -> None:
    """docs/architecture.md's map is written from the layers contract and the modules'
    docstrings; a module added, moved or described anew without rewriting it fails here."""
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "layers.py"), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_layers_contract_holds() -> None:
    """`make lint` runs it too; here so that `make test` alone catches an import up the layers."""
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
