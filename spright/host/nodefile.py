"""``node.json``: how a running node announces itself to the CLI.

The supervisor writes ``<runtime_base()>/<pid>/node.json`` once it serves and removes the
directory when it exits. Everything a reader needs is in it, typed: the CLI reads counters
from the named shared-memory table and the data plane's own state through
``transport_info``, without asking the node anything. Importing this module pulls in
nothing of the serving side (no uvloop, no gateway).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, cast, get_origin, get_type_hints

import orjson

NAME = "node.json"
PID_NAMESPACE = "pid-namespace"  # beside node.json from the directory's creation: whose pids its name counts
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
    """Where the node's per-endpoint counters live (see spright.host.counters)."""

    # a segment per security domain: its name in /dev/shm -> the endpoints whose rows it holds, in order
    segments: dict[str, list[int]]
    rows: int  # endpoints in all
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
    # per worker process: its revisions, the serving one and any canary or one still leaving
    # (spright.node.revisions.Revisions.describe)
    revisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gateways: list[int] = field(default_factory=lambda: [0])  # endpoint id of each gateway process
    # when the node traces: its span rings' segments ("segments": name -> rings, one per security
    # domain; "capacity") and what the spans are called ("names": TraceNames.to_json()); else empty
    traces: dict[str, Any] = field(default_factory=dict)

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def own_node() -> NodeFile | None:
    """The live node of ``$SPRIGHT_NODE_DIR``, if it names one: the node of this process (a worker
    inherits it) or of this pod (its containers' environment names it)."""
    if not os.environ.get(NODE_DIR_ENV):
        return None
    try:
        node = NodeFile.read(Path(os.environ[NODE_DIR_ENV]) / NAME)
    except (OSError, BadNodeFile):
        return None
    return node if _alive(node.pid) else None


def running_nodes() -> list[NodeFile]:
    """Every live node under ``runtime_base()``, and the one of ``$SPRIGHT_NODE_DIR`` (a pod's
    node directory, as its containers' environment names it), oldest pid first."""
    nodes = []
    base = runtime_base()
    paths = sorted(base.glob("*/node.json")) if base.is_dir() else []
    if os.environ.get(NODE_DIR_ENV):
        paths.append(Path(os.environ[NODE_DIR_ENV]) / NAME)
    for path in dict.fromkeys(p.resolve() for p in paths):  # a node's own processes see it twice
        try:
            node = NodeFile.read(path)
        except (OSError, BadNodeFile):
            continue  # removed right now, or not ours
        if _alive(node.pid):
            nodes.append(node)
    return sorted(nodes, key=lambda node: node.pid)


def pid_namespace() -> str:
    """This process's PID namespace (``pid:[inode]``): where the pids it sees are counted."""
    return os.readlink("/proc/self/ns/pid")


def make_runtime_dir(directory: Path, workers: tuple[int, int] | None = None) -> None:
    """Create a node's runtime directory, marked with the PID namespace its name (the
    supervisor's pid) is counted in. ``workers``: the (uid, gid) the workers drop to: the
    directory is searchable by their group (0710, not listable), and its ``data`` directory,
    where apps keep their files (apps/datadir.py), theirs."""
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    (directory / PID_NAMESPACE).write_text(pid_namespace())
    data = directory / DATA_DIR
    data.mkdir(mode=0o700, exist_ok=True)
    if workers is not None:
        uid, gid = workers
        os.chown(directory, -1, gid)
        directory.chmod(0o710)
        os.chown(data, uid, gid)


DATA_DIR = "data"  # in a node's runtime directory: the workers' own (make_runtime_dir)


def sweep_dead_nodes() -> list[str]:
    """Remove what nodes whose supervisor was SIGKILLed left behind: their shared-memory
    segments (named in their node.json) and their runtime directory (socket files, data).
    Returns what it removed. A pid that is alive again (reused) is left alone, and so is a
    directory whose pid this process cannot see: one of another PID namespace (a pod's
    gateway, in its own, sees no pid of the host's nodes: they are not dead for that), or
    one with no namespace mark (being created right now)."""
    removed = []
    base = runtime_base()
    ours = pid_namespace()
    for directory in sorted(base.iterdir()) if base.is_dir() else ():
        if not directory.name.isdigit() or _alive(int(directory.name)):
            continue
        try:
            if (directory / PID_NAMESPACE).read_text() != ours:
                continue
        except OSError:
            continue
        try:
            segments = NodeFile.read(directory / "node.json").shm
        except (OSError, BadNodeFile):
            segments = []  # died before it served: nothing named
        for name in segments:
            if name.startswith("spright-") and "/" not in name:
                segment = Path("/dev/shm") / name
                if segment.exists():
                    segment.unlink(missing_ok=True)
                    removed.append(str(segment))
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(str(directory))
    return removed
