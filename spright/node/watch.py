"""``spright run --reload``: the node watches its app's source files and reloads what changed.

What it watches: the directory of the app's module (a package's own directory), recursively,
its ``*.py`` files only (not ``__pycache__``, hidden directories or a virtualenv). What a
change reloads (``Revisions.reload``, as ``spright reload`` does): the functions whose
handler is defined in a file that changed, or every function when a changed file defines no
handler (a helper any of them may import). Changes batch (watchfiles waits for a burst of
saves to end), and never start a reload while one runs: what changes meanwhile is reloaded
once it is done. A reload refused (the code does not load, or changes the routes) is logged
with the files and the reason, and the old code serves on until the next save.

Development only: the supervisor watches with watchfiles (a thread of its Rust notifier), and
nothing of this runs unless ``Config.reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from spright.data.config import Config
from spright.node.loader import handler_files
from spright.node.revisions import Revisions, Workers
from spright.routing import App

log = logging.getLogger("spright")
VENV_NAMES = frozenset({"venv", "env", "site-packages", "dist-packages", "node_modules", "build", "dist"})


class Node(Workers, Protocol):
    """What the watcher uses of the supervisor."""

    app_ref: str
    config: Config
    revisions: Revisions

    @property
    def app(self) -> App: ...
    def _write_node_file(self) -> None: ...


def source_dir(app_ref: str) -> Path:
    """The directory the app's module lives in (for a package, the package's), as
    spright.node.loader found it: the module is imported already."""
    module_name = app_ref.partition(":")[0]
    if module_name.endswith(".py"):
        return Path(module_name).resolve().parent
    file = getattr(sys.modules[module_name], "__file__", None)
    if not file:
        raise ValueError(f"--reload: module {module_name!r} has no source file to watch")
    return Path(file).resolve().parent


def to_reload(changed: Iterable[Path], files: Mapping[str, Path | None]) -> list[str]:
    """The functions a change of ``changed`` reloads: those whose handler's file changed (and
    those whose file is unknown), or, when a changed file is no handler's, every one ([])."""
    changed = {Path(path).resolve() for path in changed}
    if not changed <= {file for file in files.values() if file is not None}:
        return []  # a helper, a module the app imports: anything may use it
    return [name for name, file in files.items() if file is None or file in changed]


def ignored(path: Path, root: Path) -> bool:
    """Whether a change of ``path`` is not one to reload for: not a ``.py`` file, or in a
    hidden directory, ``__pycache__`` or a virtualenv under ``root``."""
    if path.suffix != ".py" or path.name.startswith("."):
        return True
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        return True
    for depth, part in enumerate(parts):
        if part.startswith(".") or part == "__pycache__" or part in VENV_NAMES:
            return True
        if (root.joinpath(*parts[: depth + 1]) / "pyvenv.cfg").exists():
            return True
    return False


class Watcher:
    """Watches the node's app while it serves, with ``Config.reload``; nothing without it."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._stop = asyncio.Event()
        self._pending: set[Path] = set()
        self._task: asyncio.Task[None] | None = None  # the watch
        self._reloading: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Watch, from now on (the node serves), if the node runs with ``--reload``."""
        if not self._node.config.reload:
            return
        root = source_dir(self._node.app_ref)
        # the templates of later revisions write no bytecode: a file saved twice in one second
        # with the same size would otherwise load the first save's (.pyc files keep whole seconds)
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        self._task = asyncio.ensure_future(self._watch(root))
        log.warning("spright: --reload: watching %s/**/*.py", root)

    async def stop(self) -> None:
        """Stop watching (the node stops): its thread ends, a reload under way is abandoned."""
        self._stop.set()
        for task in (self._reloading, self._task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _watch(self, root: Path) -> None:
        from watchfiles import awatch

        async for changes in awatch(root, watch_filter=lambda _, path: not ignored(Path(path), root),
                                    stop_event=self._stop):
            self._pending.update(Path(path) for _, path in changes)
            if self._reloading is None or self._reloading.done():
                self._reloading = asyncio.ensure_future(self._reload_pending())

    async def _reload_pending(self) -> None:
        """Reload for what changed, then again for what changed meanwhile, until nothing has."""
        while self._pending and not self._stop.is_set():
            changed, self._pending = self._pending, set()
            await self.reload(changed)

    async def reload(self, changed: set[Path]) -> None:
        node = self._node
        names = to_reload(changed, handler_files(node.app.functions))
        shown = ", ".join(sorted(str(path) for path in changed))
        try:
            await node.revisions.reload(node, node.app_ref, names)
        except ValueError as exc:  # Refused, and an unknown function's name
            log.error("spright: --reload: %s changed, but the reload was refused: %s; the old code serves on "
                      "until the next save", shown, exc)
        except Exception:  # whatever it is, the node serves on and the next save tries again
            log.exception("spright: --reload: reloading for %s failed; the old code serves on", shown)
        node._write_node_file()
