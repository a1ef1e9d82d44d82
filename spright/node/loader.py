"""Finds the ``App`` a user points at: ``module``, ``module:attr`` or ``path/to/file.py``.

With ``SPRIGHT_REMOTES`` set (a JSON object: function name -> URL of the node serving it, as
``spright run --remotes`` and the Knative manifests of ``spright deploy knative`` set it), the
app is the one this node runs: those functions on the other nodes, the rest here, exposed to
them (``App.with_remotes``). Every process of the node reads the same variable.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson

from spright.data.function import Function
from spright.routing import App, RoutingError

REMOTES_ENV = "SPRIGHT_REMOTES"


class AppNotFound(Exception):
    """The reference does not name an importable App; the message says what to fix."""


def load_app(reference: str) -> App:
    app = _find_app(reference)
    remotes = os.environ.get(REMOTES_ENV)
    if not remotes:
        return app
    try:
        where = orjson.loads(remotes)
    except orjson.JSONDecodeError as exc:
        raise RoutingError(f"{REMOTES_ENV} is not JSON: {exc}") from None
    if not isinstance(where, dict) or not all(isinstance(url, str) for url in where.values()):
        raise RoutingError(f'{REMOTES_ENV} must be a JSON object of function name -> URL, e.g. {{"pay": "http://h:80"}}')
    return app.with_remotes(where)


def handler_files(functions: Mapping[str, Function]) -> dict[str, Path | None]:
    """Function name -> the file its handler is defined in (None: unknown, e.g. a builtin)."""
    files: dict[str, Path | None] = {}
    for name, function in functions.items():
        handler = inspect.unwrap(function.handler)
        if not (inspect.isfunction(handler) or inspect.ismethod(handler)):
            handler = type(handler)  # a callable object: its class's file
        file = None
        with contextlib.suppress(TypeError, OSError):
            file = inspect.getsourcefile(handler)
        files[name] = Path(file).resolve() if file else None
    return files


def app_files(app: App) -> list[str]:
    """What every worker reads after it dropped to its user (spright.host.sandbox): its
    handlers' source files and the libraries every worker imports."""
    import uvloop

    import spright

    handlers = {str(file) for file in handler_files(app.functions).values() if file is not None}
    return sorted(handlers | {str(spright.__file__), str(uvloop.__file__)})


def _find_app(reference: str) -> App:
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
    apps: dict[str, App] = {}  # the module's App objects by their first name (an alias is the same app)
    for name, value in vars(module).items():
        if isinstance(value, App) and all(value is not app for app in apps.values()):
            apps[name] = value
    if attribute:
        app = getattr(module, attribute, None)
        if not isinstance(app, App):
            found = f"{attribute!r} is a {type(app).__name__}" if hasattr(module, attribute) else f"no {attribute!r}"
            there = ", ".join(f"{module_name}:{name}" for name in apps)
            there = f"its App{'s' if len(apps) > 1 else ''}: {there}" if apps else "it defines no App"
            raise AppNotFound(f"{module_name!r} has no App named {attribute!r} ({found}); {there}")
        return app
    if not apps:
        raise AppNotFound(f"{module_name!r} defines no App: looked for a module-level spright.App "
                          f'(e.g. app = App("name")) and found none')
    if len(apps) > 1:
        raise AppNotFound(f"{module_name!r} defines {len(apps)} App objects ({', '.join(apps)}): name the one to "
                          f"run, e.g. {module_name}:{next(iter(apps))}")
    return next(iter(apps.values()))


def _path_to_module(path: str) -> str:
    file = Path(path).resolve()
    if not file.exists():
        raise AppNotFound(f"no such file: {path}")
    sys.path.insert(0, str(file.parent))
    return file.stem
