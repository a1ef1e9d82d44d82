"""The node directory: how a gateway and workers started on their own make one node.

``spright run`` starts every process of a node itself. In a Kubernetes pod each runs in a
container of its own: ``spright gateway APP --node-dir DIR`` starts the gateway with the data
plane, the pools and the counter table, and writes ``DIR/join.json``; each ``spright worker APP
PROCESS --node-dir DIR`` waits for that file, compiles the app itself (the table must be the
gateway's: same app, same options, checked by a digest), attaches to its own domain's pool and to
the data plane, and joins on the node's control socket. It keeps that connection open: its end
tells the gateway that the worker is gone, as a process's exit tells ``spright run``'s
supervisor. A worker that restarts joins again; when the gateway goes, its workers exit with it
(their containers restart them, and they join the next gateway).

The directory holds sockets and the names of the shared-memory segments: it is the node's
boundary (mode 0700), shared by the pod's containers with /dev/shm and, on skmsg, the bpffs.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]  # the C side of multiprocessing.Lock
import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from spright.data.table import RouteTable
from spright.host import nodefile, sandbox
from spright.host.counters import GATEWAY_DOMAIN
from spright.host.instances import FILE_NAME as INSTANCES_FILE
from spright.host.pool import PoolHandle
from spright.node import control
from spright.node.assembly import spans_name
from spright.node.loader import load_app
from spright.node.process import WorkerSpec, serve_worker
from spright.transport import registry

FILE_NAME = "join.json"
_SEMAPHORE = 1  # multiprocessing.synchronize.SEMAPHORE: the kind of a multiprocessing Lock


@dataclass(frozen=True)
class JoinInfo:
    """``join.json``: what a worker started on its own needs to join the node."""

    app_ref: str
    instances: list[tuple[str, int]]  # the options the gateway compiled the table with
    gateways: int
    digest: str  # of that table and the pool's layout: a worker's must be the same
    transport: str
    transport_state: dict[str, Any]  # Transport.join_state()
    pools: dict[str, tuple[str, str]]  # domain -> (segment prefix, lock name)
    counters: dict[str, str]  # domain -> its counter segment's shared-memory name
    drain_timeout: float


def digest(table: RouteTable, pool_layout: object) -> str:
    described = orjson.dumps([table.describe(), table.describe_functions(), list(table.gateways), repr(pool_layout)],
                             option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(described).hexdigest()[:16]


def write(node_dir: Path, info: JoinInfo, group: int | None = None) -> None:
    """Atomically: a worker never reads half a file. ``group``: the workers' containers run as
    that group, not as the gateway's user (``hand_over``, first)."""
    if group is not None:
        hand_over(node_dir, group, workers_segments(info))
    temporary = node_dir / f".{FILE_NAME}.tmp"
    temporary.write_bytes(orjson.dumps(asdict(info), option=orjson.OPT_INDENT_2))
    _grant(temporary, group, 0o640)
    temporary.replace(node_dir / FILE_NAME)


def hand_over(node_dir: Path, group: int, shm: Iterable[str]) -> None:
    """A pod whose gateway is root (skmsg) and whose workers' containers are not: what the workers
    open becomes ``group``'s, read-write (read for join.json) to it and to nobody else: the node
    directory (searchable, not listable), its control socket and live-instances file, the ``data``
    directory, and ``shm``, the node's segments and pool locks in /dev/shm. The data plane's own
    sockets are granted as they are made (``Transport.share_with``). The files stay root's: the
    gateway needs ``group`` among its groups (the pod's fsGroup) to give them to it, no CAP_CHOWN."""
    try:
        if node_dir.stat().st_uid == os.geteuid():  # else the pod's volume, which the workers reach already
            _grant(node_dir, group, 0o710)
        _grant(node_dir / nodefile.DATA_DIR, group, 0o770)
        for name in (control.SOCKET_NAME, INSTANCES_FILE):
            _grant(node_dir / name, group, 0o660)
        for name in shm:
            _grant(Path("/dev/shm") / name, group, 0o660)
    except PermissionError as exc:
        raise PermissionError(f"the gateway cannot hand the node's files to group {group} ({exc}): run it with "
                              f"{group} among its groups (the pod's fsGroup), or with CAP_CHOWN") from None


def workers_segments(info: JoinInfo) -> list[str]:
    """What the workers of ``info``'s node open in /dev/shm: each domain's pool segments and lock,
    counters and span rings (if the node traces); not the gateways' own (domain 0's counters)."""
    shm = Path("/dev/shm")
    names = [segment.name for prefix, _ in info.pools.values() for segment in shm.glob(f"{prefix}-*")]
    names += [f"sem.{lock.lstrip('/')}" for _, lock in info.pools.values()]
    for domain, counters in info.counters.items():
        if int(domain) != GATEWAY_DOMAIN:
            names += [name for name in (counters, spans_name(counters)) if (shm / name).exists()]
    return names


def _grant(path: Path, group: int | None, mode: int) -> None:
    if group is not None:
        os.chown(path, -1, group)
        path.chmod(mode)
    else:
        path.chmod(mode & 0o700)


def handles(pools: list[PoolHandle]) -> dict[str, tuple[str, str]]:
    return {str(handle.domain): (handle.prefix, handle.lock._semlock.name) for handle in pools}


async def wait(node_dir: Path, timeout: float) -> JoinInfo:
    """The node's join.json, once its gateway has written it; TimeoutError after ``timeout`` s."""
    path, deadline = node_dir / FILE_NAME, time.monotonic() + timeout
    if not path.exists():
        logging.getLogger("spright").info("spright: waiting up to %g s for a gateway to write %s", timeout, path)
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no gateway wrote {path} within {timeout:g} s")
        await asyncio.sleep(0.1)
    return JoinInfo(**orjson.loads(path.read_bytes()))


class NamedLock:
    """The gateway's pool lock, opened by name (a POSIX semaphore in the shared /dev/shm).

    Private CPython API on purpose: multiprocessing opens a Lock in another process only by
    inheritance (fork) or by pickling it to a child it spawns, and a worker started on its own
    in its own container is neither. A supported alternative would cost the hot path: an
    flock'd file is a syscall per pool operation where the semaphore's uncontended path is
    none, and posix_ipc is a C dependency for the same semaphore.
    tests/test_join.py fails on a Python whose ``SemLock._rebuild`` no longer does this."""

    def __init__(self, name: str) -> None:
        self._semlock = _multiprocessing.SemLock._rebuild(0, _SEMAPHORE, 1, name)


def worker_spec(info: JoinInfo, node_dir: Path, app_ref: str, process: str, instance: int) -> WorkerSpec:
    """The spec of worker process ``process`` (instance ``instance``) of the node; ValueError
    when this app or these names are not what the gateway runs."""
    app = load_app(app_ref)
    table = app.compile(dict(info.instances), info.gateways)
    if digest(table, app.config.pool) != info.digest:
        raise ValueError(f"{app_ref} compiles to another node than the gateway's ({info.app_ref}): "
                         "start the worker with the gateway's app, version and options")
    groups = table.processes()
    if process not in groups:
        raise ValueError(f"app {app.name!r} has no worker process {process!r}; its processes: {', '.join(groups)}")
    function = table.functions[groups[process][0] - 1]
    if not 0 <= instance < table.max_instances(function.id):
        raise ValueError(f"process {process!r} may run instances 0..{table.max_instances(function.id) - 1}, "
                         f"not {instance}")
    prefix, lock = info.pools[str(function.domain)]
    pool = PoolHandle(prefix, app.config.pool, NamedLock(lock), function.domain)
    transport = registry()[info.transport].rejoin(node_dir, table, info.transport_state)
    return WorkerSpec(app_ref, process, instance, table, pool, transport, info.counters[str(function.domain)],
                      info.drain_timeout, tracked=False)


def join_main(node_dir: Path, app_ref: str, process: str, instance: int, patience: float) -> None:
    """``spright worker``: a worker process started on its own joins the node whose gateway
    serves in ``node_dir``, waiting up to ``patience`` seconds for it, and serves until
    SIGTERM or until the gateway goes."""
    sealable = sandbox.enter()  # first, while this process has a single thread
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s [{process}#{instance}] %(message)s")

    async def joined() -> None:
        info = await wait(node_dir, patience)
        spec = worker_spec(info, node_dir, app_ref, process, instance)
        reader, writer = await asyncio.open_unix_connection(str(node_dir / control.SOCKET_NAME))
        writer.write(orjson.dumps({"join": process, "instance": instance, "pid": os.getpid()}) + b"\n")
        answer = orjson.loads(await reader.readline() or b"{}")
        if "joined" not in answer:
            raise RuntimeError(f"the gateway refused the worker: {answer.get('error', 'no answer')}")
        gateway_gone = asyncio.ensure_future(reader.read())  # ends when the gateway does
        await serve_worker(spec, sealable, gateway_gone)
        writer.close()

    uvloop.run(joined())
