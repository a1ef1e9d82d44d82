"""The node's template process (a zygote): workers fork from it, warm (``worker_start="fork"``).

A spawned worker is a fresh interpreter that imports spright, uvloop, the app and its
dependencies before it serves: ~150 ms, which the first request after a scale from zero waits
for. The template is spawned once per node, before its first worker; it imports all that once,
then only forks, and each worker starts as a copy of it, already warm.

It is safe to fork from because it holds nothing that must not be copied: no thread (checked
once the imports are done: a thread the app starts at import would not exist in the copies, and
a lock it held would stay held there, so the node spawns instead, saying why), no event loop
(each worker creates its own uvloop after the fork), no socket, pool or BPF object of the
node's (it is spawned, so it inherits only its channel to the supervisor and stdio; it never
attaches to the node's memory nor loads bcc). Each worker then does what a spawned one does:
enters its own domain's sandbox first, attaches to its domain's pool, seals itself. What must
differ per process is re-seeded at the fork: Python's ``random`` (CPython does it), spright's
trace ids (spright.data.tracecontext), numpy's global generator if the app imported numpy;
``os.urandom`` and ``secrets`` ask the kernel and need nothing. A generator or a connection the
app itself makes at import is shared by every copy: make it per process, or spawn.

Why not multiprocessing's forkserver, which has this shape: its server listens on an abstract
unix socket that any process of the network namespace may connect to, unauthenticated (before
3.14), and forks whatever pickled process it is sent, outside any sandbox: a sealed worker could
ask it for a process that is not sealed. The template's only channel is a socket pair whose
other end is the supervisor's; its children close their copy at once.

Lifetimes: the template dies with the supervisor (PR_SET_PDEATHSIG, as every process of the
node) and each worker with the template, so a SIGKILLed supervisor leaves no process behind. A
template that dies takes its workers with it: they are restarted like crashed ones, spawned.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import io
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import threading
import traceback
import weakref
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.context import set_spawning_popen
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, NamedTuple, NoReturn, Protocol, cast

import orjson

from spright.data.table import RouteTable
from spright.host.procs import die_with_parent, name_process
from spright.node.loader import load_app
from spright.node.process import WorkerSpec, worker_main

log = logging.getLogger("spright")
_PID = struct.Struct("q")
_CODE = struct.Struct("i")
_F_SETPIPE_SZ = 1031


class Shape(NamedTuple):
    """How the node compiled its app (``App.compile``'s arguments): a template compiles the
    code it loaded the same way, so a reload can tell whether the routes still match."""

    instances: tuple[tuple[str, int], ...]
    gateways: int
    default_timeout: float


def shape_of(table: RouteTable) -> list[object]:
    """What a reload may not change: the routes, with their chains and timeouts, and the
    functions, with their ids, processes, domains, concurrency and instances."""
    return [table.describe(), table.describe_functions()]


class WorkerProcess(Protocol):
    """What the supervisor uses of a worker process: a multiprocessing Process, or a ``Forked``."""

    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Starts:
    """How the supervisor starts worker processes: forked from the node's template (``fork``),
    or each a fresh interpreter (``spawn``); forking falls back to spawning where the template
    cannot serve (it says why, once)."""

    def __init__(self, how: str, app_ref: str) -> None:
        self.how, self.app_ref = how, app_ref  # Config.worker_start
        self.template: BaseProcess | None = None
        self.template_pid = 0  # while it serves
        self._channel: socket.socket | None = None

    async def open(self, timeout: float, modules: list[str], shape: Shape) -> dict[str, Any]:
        """Start a template that imports the app and ``modules`` and compiles the app as
        ``shape`` says; its report: ``{"app", "shape"}`` (the compiled table's routes and
        functions, to compare with the node's), and ``"error"`` when the app did not load.
        It stays as the template workers fork from (``fork``) unless it cannot serve as one
        (then ``"unforkable"`` says why, and workers are spawned)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # started from the event loop's thread: its PR_SET_PDEATHSIG follows the thread that forked it
        self.template = get_context("spawn").Process(target=template_main, name="spright-template", daemon=True,
                                                     args=(theirs, self.app_ref, modules, shape, os.getpid()))
        self.template.start()
        theirs.close()
        self._channel = ours
        try:
            ours.setblocking(False)
            report = orjson.loads(await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 1 << 20), timeout)
                                  or b"{}")
        except (TimeoutError, OSError, orjson.JSONDecodeError) as exc:
            report = {"error": f"it did not report ({exc!r})"}
        if "pid" not in report or self.how != "fork":
            self.close()
            return report
        self.template_pid = int(report["pid"])
        ours.settimeout(30)  # for a fork's answer: it takes a millisecond or two
        return report

    def start(self, spec: WorkerSpec, name: str) -> WorkerProcess:
        """Start a worker process (``spec.parent`` is ``parent()``)."""
        if self.template_pid and self.template is not None and not self.template.is_alive():
            log.error("spright: the template exited with code %s; workers are spawned from now on",
                      self.template.exitcode)
            self.template_pid = 0
        if self.template_pid:
            try:
                return self._fork(spec)
            except BlockingIOError:
                log.warning("spright: worker %s's spec is larger than a pipe holds: spawned", name)
            except OSError as exc:
                # its channel is out of step now: no more forks, but the workers it forked serve on
                # (they would die with it) until the node stops
                log.error("spright: the template cannot fork (%s); workers are spawned from now on", exc)
                self.template_pid = 0
        process = get_context("spawn").Process(target=worker_main, args=(spec,), name=name, daemon=True)
        process.start()
        return process

    def parent(self) -> int:
        """The pid of the process the next worker is started by, which it dies with."""
        return self.template_pid or os.getpid()

    def _fork(self, spec: WorkerSpec) -> Forked:
        """Blocks for as long as the template takes to fork (a millisecond or two)."""
        assert self._channel is not None
        buffer = io.BytesIO()
        # pickled as for a spawned child: the pool's lock (a named semaphore) pickles only then,
        # by name; nothing of the spec is a file descriptor (duplicate_for_child says so if it were)
        set_spawning_popen(cast(Any, self))
        try:
            ForkingPickler(buffer).dump(spec)
        finally:
            set_spawning_popen(None)
        data = buffer.getbuffer()
        spec_r, spec_w = os.pipe()
        try:
            with contextlib.suppress(OSError):  # a pipe that holds it all: written now, read by the child later
                fcntl.fcntl(spec_w, _F_SETPIPE_SZ, max(len(data), 65536))
            os.set_blocking(spec_w, False)
            if os.write(spec_w, data) < len(data):
                raise BlockingIOError("the spec does not fit in a pipe")
            socket.send_fds(self._channel, [b"fork"], [spec_r])
        finally:
            os.close(spec_r)
            os.close(spec_w)
        message, fds, _, _ = socket.recv_fds(self._channel, _PID.size, 1)
        if len(message) != _PID.size or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise OSError("the template's channel closed")
        return Forked(_PID.unpack(message)[0], fds[0])

    def duplicate_for_child(self, fd: int) -> int:
        raise ValueError("a worker forked from the template is handed no file descriptor in its spec")

    def close(self) -> None:
        """Stop the template (its channel closing tells it to); any worker still forked from
        it dies with it."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self.template_pid = 0
        if self.template is not None:
            self.template.join(2)
            if self.template.is_alive():
                self.template.kill()
                self.template.join(1)
            self.template = None


class Forked:
    """A worker forked from the template, as the supervisor sees it: ``sentinel`` turns readable
    when the template has reaped it, with its exit code (or at EOF, the template gone)."""

    def __init__(self, pid: int, status: int) -> None:
        self.pid, self.sentinel = pid, status
        self._exitcode: int | None = None
        weakref.finalize(self, os.close, status)

    @property
    def exitcode(self) -> int | None:
        if self._exitcode is None and wait([self.sentinel], 0):
            code = os.read(self.sentinel, _CODE.size)
            # EOF: the template died first, and the worker with it (PR_SET_PDEATHSIG)
            self._exitcode = _CODE.unpack(code)[0] if len(code) == _CODE.size else -signal.SIGKILL
        return self._exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        wait([self.sentinel], timeout)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.exitcode is None:  # not reaped yet: the pid is still the worker's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


# -- the template process ----------------------------------------------------------------------
def template_main(channel: socket.socket, app_ref: str, modules: list[str], shape: Shape, parent: int) -> None:
    """Entry point of the template process (spawned by the supervisor)."""
    die_with_parent(parent)
    # the supervisor decides when it stops (by closing its channel): a SIGTERM to the whole group
    # (systemd's, a terminal's ^C) must not take the workers with it before they drain
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    report = _preload(app_ref, modules, shape)
    channel.send(orjson.dumps(report))
    if "pid" in report:
        name_process(f"template [{report['app']}]")
        _serve(channel)


def _preload(app_ref: str, modules: list[str], shape: Shape) -> dict[str, object]:
    try:
        for module in modules:
            importlib.import_module(module)
        app = load_app(app_ref)
        table = app.compile(dict(shape.instances), shape.gateways, default_timeout=shape.default_timeout)
        os.close(os.pidfd_open(os.getpid()))  # how it waits for its children (Linux 5.3)
    except Exception as exc:  # whatever it is, the caller says why (and a node spawns instead)
        return {"error": f"{type(exc).__name__}: {exc}"}
    report: dict[str, object] = {"app": app.name, "shape": shape_of(table)}
    threads = [thread.name for thread in threading.enumerate() if thread is not threading.current_thread()]
    if threads:
        return {**report, "unforkable": f"the app starts threads at import ({', '.join(threads)}): forking would "
                                       "lose them"}
    os.register_at_fork(after_in_child=_reseed)
    return {**report, "pid": os.getpid()}


def _reseed() -> None:
    """In each child: what must differ per process and does not re-seed itself at a fork, as
    Python's ``random`` and spright's trace ids do: numpy's global generator, seeded from the
    OS when numpy is imported."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _serve(channel: socket.socket) -> None:
    """Fork a worker for each request, until the supervisor closes the channel; report each
    one's exit code on its status pipe once reaped."""
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (pid, status pipe's write end)
    with selectors.DefaultSelector() as selector:
        selector.register(channel, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is channel:
                    message, fds, _, _ = socket.recv_fds(channel, 16, 1)
                    if not message:
                        return  # the node stops
                    for spec in fds:
                        _fork(spec, channel, selector, children)
                else:
                    pid, status = children.pop(key.fd)
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _, code = os.waitpid(pid, 0)
                    with contextlib.suppress(OSError):
                        os.write(status, _CODE.pack(os.waitstatus_to_exitcode(code)))
                    os.close(status)


def _fork(spec: int, channel: socket.socket, selector: selectors.BaseSelector,
          children: dict[int, tuple[int, int]]) -> None:
    status_r, status_w = os.pipe()
    template = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(template, spec, [channel.fileno(), status_r, status_w,
                                *(fd for pidfd, (_, status) in children.items() for fd in (pidfd, status))], selector)
    os.close(spec)
    pidfd = os.pidfd_open(pid)
    children[pidfd] = (pid, status_w)
    selector.register(pidfd, selectors.EVENT_READ)
    socket.send_fds(channel, [_PID.pack(pid)], [status_r])
    os.close(status_r)


def _child(template: int, spec: int, theirs: list[int], selector: selectors.BaseSelector) -> NoReturn:
    """A worker, just forked: it keeps nothing of the template's (no way back to the
    supervisor's channel, no sibling's exit status), then serves as a spawned one does."""
    code = 1
    try:
        die_with_parent(template)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the worker's loop handles it
        selector.close()
        for fd in theirs:
            os.close(fd)
        with open(spec, "rb") as pipe:
            worker = pickle.load(pipe)
        worker_main(worker)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:  # as multiprocessing does: the traceback, then exit 1
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
