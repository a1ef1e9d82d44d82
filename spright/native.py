"""The compiled hot path: which modules mypyc compiles, and whether they run compiled.

``make setup`` runs ``spright.native.build()``: mypyc (part of mypy) compiles
``MODULES`` into C extensions beside their sources, where Python's import prefers them. The
sources stay the truth and the fallback: where no compiler is (``build`` says so and does
nothing), with ``SPRIGHT_PURE=1``, or when a source changed after its build (a stale build:
one compiled module beside a newer source would run old code), every one of them runs from
its ``.py``. It is all or none: the compiled modules call each other directly in C, so a
source module mixed in would leave two copies of its classes.

``choose()`` runs first thing in ``import spright`` (workers, spawned, import it too, so a
node runs one way throughout); ``state()`` says which way, for ``spright doctor``.
Modules listed here are mypy-clean and avoid what mypyc cannot compile: a class that
interpreted code subclasses (say ``@mypyc_attr(allow_interpreted_subclasses=True)``), a
bytes subclass (``native_class=False``), ``self.__dict__``, monkeypatching.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
# what every descriptor crosses, measured one by one (bench/callpath.py; docs/performance.md)
MODULES = (
    "spright.data.descriptor",
    "spright.host.pool",
    "spright.worker.calls",
    "spright.worker.runtime",
    "spright.worker.answers",
    "spright.worker.streams",
    "spright.worker.inflows",
    "spright.data.reorder",
    "spright.worker.context",
    "spright.front.incoming",
    "spright.front.gateway",
    "spright.front.http",
    "spright.front.streams",
    "spright.front.render",
    "spright.front.uploads",
    "spright.worker.bodies",
    "spright.worker.chunks",
    "spright.data.headers",
    "spright.data.multidict",
    "spright.data.response",
    # tracing: what a traced request costs every process it crosses, and the gateway's reading
    "spright.data.traces",
    "spright.data.tracecontext",
    "spright.host.spans",
    "spright.worker.tracing",
    "spright.worker.failures",
    "spright.front.recorder",
)
_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
# the compiled modules' shared library, inside the package: under mypyc's default name it would sit
# at the checkout's top, importable only by a process started there (not `spright` run elsewhere)
GROUP = "spright.hotpath"
# what `python -m mypyc` runs, with the group named
_SETUP = """\
from setuptools import setup
from mypyc.build import mypycify

setup(name="spright-hotpath", ext_modules=mypycify({files!r}, opt_level="3", group_name={group!r}))
"""


def source(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def extension(module: str) -> Path:
    return source(module).with_suffix(_SUFFIX)


def library() -> Path:
    """The build's shared library (mypyc's group): every compiled module's code is in it."""
    package, name = GROUP.rsplit(".", 1)
    return ROOT.joinpath(*package.split("."), f"{name}__mypyc{_SUFFIX}")


def state() -> str:
    """``compiled``, or why the sources run: ``pure (SPRIGHT_PURE=1)``, ``pure (not built)``,
    ``pure (stale build: <module> changed since)``."""
    if os.environ.get("SPRIGHT_PURE") == "1":
        return "pure (SPRIGHT_PURE=1)"
    built = [m for m in MODULES if extension(m).exists()]
    if len(built) < len(MODULES):
        return "pure (not built: make setup compiles it)" if not built else \
            f"pure (partly built: {', '.join(sorted(set(MODULES) - set(built)))} missing)"
    if not library().exists():
        return f"pure (partly built: {library().name} missing)"
    stale = [m for m in MODULES if source(m).stat().st_mtime > extension(m).stat().st_mtime]
    if stale:
        return f"pure (stale build: {', '.join(stale)} changed since; make setup rebuilds it)"
    return "compiled"


class _Sources:
    """A finder that gives ``MODULES`` their ``.py``, whatever extension lies beside it."""

    @staticmethod
    def find_spec(fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))


def choose() -> str:
    """Before any of ``MODULES`` is imported: run them compiled, or all from source."""
    how = state()
    if how != "compiled" and any(extension(m).exists() for m in MODULES) and _Sources not in sys.meta_path:
        sys.meta_path.insert(0, _Sources)  # a finder needs only find_spec
        if "stale" in how:
            print(f"spright: {how}: running the Python sources", file=sys.stderr)
    return how


def build() -> int:
    """Compile ``MODULES`` in place (``make setup``, ``make native``); 0 when done or when
    there is nothing to do, with a line saying why (a missing compiler is not an error:
    the sources run)."""
    if os.environ.get("SPRIGHT_PURE") == "1":
        print("spright.native: SPRIGHT_PURE=1: not compiling; the hot path runs as Python")
        return 0
    if state() == "compiled":
        print("spright.native: the compiled hot path is up to date")
        return 0
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    missing = [what for what, ok in (("a C compiler (gcc)", shutil.which("gcc") or shutil.which("cc")),
                                     (f"Python's headers ({include})", include.exists()),
                                     ("mypyc (pip install mypy)", importlib.util.find_spec("mypyc"))) if not ok]
    if missing:
        print(f"spright.native: not compiling, missing {' and '.join(missing)}: the hot path runs as Python")
        return 0
    clean()
    files = [str(source(m).relative_to(ROOT)) for m in MODULES]
    (ROOT / "build").mkdir(exist_ok=True)
    setup = ROOT / "build" / "setup_hotpath.py"
    setup.write_text(_SETUP.format(files=files, group=GROUP))
    done = subprocess.run([sys.executable, str(setup), "build_ext", "--inplace"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        print(done.stdout[-4000:] + done.stderr[-4000:], file=sys.stderr)
        print("spright.native: mypyc failed (above): the hot path runs as Python", file=sys.stderr)
        return done.returncode
    for module in MODULES:  # newer than its source: setuptools copies an unchanged build with its old time
        os.utime(extension(module))
    print(f"spright.native: compiled {len(MODULES)} modules with mypyc")
    return 0


def clean() -> None:
    """Remove the extensions (``make clean``): the sources run."""
    for module in MODULES:
        extension(module).unlink(missing_ok=True)
    library().unlink(missing_ok=True)


STATE = choose()  # at import: spright/__init__.py imports this module before anything else
