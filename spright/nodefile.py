"""``node.json``: how a running node announces itself to the CLI.

The supervisor writes ``<runtime_base()>/<pid>/node.json`` once it serves and removes the
directory when it exits. Everything a reader needs is in it, typed: the CLI reads counters
from the named shared-memory table and the data plane's own state through
``transport_info``, without asking the node anything. Importing this module pulls in
nothing of the serving side (no uvloop, no gateway).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, cast, get_origin, get_type_hints

import orjson

NAME = "node.json"
NODE_DIR_ENV = "SPRIGHT_NODE_DIR"  # a node's runtime directory, for its processes (and a pod's containers)
T = TypeVar("T")


def runtime_base() -> Path:
    """Where nodes keep their runtime directory (``<base>/<pid>/node.json``); the CLI scans it.

    ``SPRIGHT_RUNTIME_DIR`` overrides it: separate groups of nodes (tests, users) can each
    keep their own.
    """
    if os.environ.get("SPRIGHT_RUNTIME_DIR"):
        return Path(os.environ["SPRIGHT_RUNTIME_DIR"])
    if os.geteuid() == 0:
        return Path("/run/spright")
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"spright-{os.getuid()}"


class BadNodeFile(ValueError):
    """A node.json that is not (or not yet, or no longer) a whole one; says what is wrong."""


@dataclass(frozen=True)
class CounterSegment:
    """Where the node's per-endpoint counters live (see spright.metrics)."""

    shm: str  # the shared-memory segment's name in /dev/shm
    rows: int
    row_words: int
    columns: list[str]


@dataclass(frozen=True)
class NodeFile:
    pid: int  # the supervisor's
    app: str
    app_ref: str
    host: str
    port: int
    transport: str
    transport_info: dict[str, Any]  # what the data plane says readers need (Transport.node_info)
    workers: dict[str, int]  # function name -> worker process pid
    shm: list[str]  # every segment of the node's in /dev/shm
    metrics: CounterSegment
    domains: list[str]
    functions: list[dict[str, Any]]  # RouteTable.describe_functions()
    routes: list[dict[str, Any]]  # RouteTable.describe(): the compiled table
    scaling: list[dict[str, Any]] = field(default_factory=list)  # the autoscaler's last decisions
    gateways: list[int] = field(default_factory=lambda: [0])  # endpoint id of each gateway process

    def describe(self) -> str:
        return f"pid {self.pid}: app {self.app!r} on port {self.port} (transport {self.transport})"

    def write(self, directory: Path) -> None:
        """Atomically: a reader never sees half a file."""
        partial = directory / f".{NAME}.partial"
        partial.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        partial.replace(directory / NAME)

    @classmethod
    def read(cls, path: Path) -> NodeFile:
        """Raises OSError, or BadNodeFile naming the file and the field that is wrong."""
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise BadNodeFile(f"{path}: not JSON ({exc})") from None
        return _typed(cls, data, path)


def _typed(cls: type[T], data: Any, path: Path, within: str = "") -> T:
    """``cls`` built from ``data``: every field without a default present, each of its
    declared kind (a nested dataclass from its own JSON object, its fields named ``within``
    it); element types are not checked."""
    if not isinstance(data, dict):
        raise BadNodeFile(f"{path}: {within.rstrip('.') or 'the file'} is not a JSON object")
    hints = get_type_hints(cls)
    values = {}
    for entry in fields(cast(Any, cls)):
        name = within + entry.name
        if entry.name not in data:
            if entry.default is MISSING and entry.default_factory is MISSING:
                raise BadNodeFile(f"{path}: field {name!r} is missing")
            continue
        hint, value = hints[entry.name], data[entry.name]
        if is_dataclass(hint):
            value = _typed(cast(type, hint), value, path, f"{name}.")
        elif not isinstance(value, get_origin(hint) or hint) or isinstance(value, bool):
            raise BadNodeFile(f"{path}: field {name!r} should be {entry.type}, not {type(value).__name__}")
        values[entry.name] = value
    return cls(**values)
