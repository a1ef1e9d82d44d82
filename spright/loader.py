"""Finds the ``App`` a user points at: ``module``, ``module:attr`` or ``path/to/file.py``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from spright.routing import App


class AppNotFound(Exception):
    """The reference does not name an importable App; the message says what to fix."""


def load_app(reference: str) -> App:
    module_name, _, attribute = reference.partition(":")
    if not module_name:
        raise AppNotFound(f"{reference!r}: expected MODULE or MODULE:APP, e.g. examples.echo:app")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the working directory is importable
    try:
        if module_name.endswith(".py"):
            module_name = _path_to_module(module_name)
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppNotFound(f"cannot import module {module_name!r}: no such module (is it on sys.path?)") from None
        raise
    if attribute:
        app = getattr(module, attribute, None)
        if not isinstance(app, App):
            raise AppNotFound(f"{module_name!r} has no App named {attribute!r}")
        return app
    apps = [value for value in vars(module).values() if isinstance(value, App)]
    if len(apps) != 1:
        found = "none" if not apps else f"{len(apps)}"
        raise AppNotFound(f"{module_name!r} defines {found} App objects; name one as {module_name}:NAME")
    return apps[0]


def _path_to_module(path: str) -> str:
    file = Path(path).resolve()
    if not file.exists():
        raise AppNotFound(f"no such file: {path}")
    sys.path.insert(0, str(file.parent))
    return file.stem
