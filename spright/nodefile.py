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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

NAME = "node.json"


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
        if not isinstance(data, dict):
            raise BadNodeFile(f"{path}: not a JSON object")
        values = _typed(cls, data, path)
        values["metrics"] = CounterSegment(**_typed(CounterSegment, values["metrics"], path))
        return cls(**values)


_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "str": str, "list[str]": list, "dict[str, Any]": dict,
                                             "dict[str, int]": dict, "list[dict[str, Any]]": list,
                                             "CounterSegment": dict}


def _typed(cls: type, data: Any, path: Path) -> dict[str, Any]:
    """``data``'s fields for ``cls``, each present and of its declared kind."""
    if not isinstance(data, dict):
        raise BadNodeFile(f"{path}: {cls.__name__} is not a JSON object")
    values = {}
    for field in fields(cls):
        if field.name not in data:
            raise BadNodeFile(f"{path}: field {field.name!r} is missing")
        value = data[field.name]
        expected = _TYPES[str(field.type)]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise BadNodeFile(f"{path}: field {field.name!r} should be {field.type}, not {type(value).__name__}")
        values[field.name] = value
    return values
