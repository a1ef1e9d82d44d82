"""S-SPRIGHT data plane: an eBPF sk_msg program redirects descriptors between sockets.

Every endpoint owns one TCP loopback socket connected to a dummy listener that never
reads. ``ebpf/skmsg.c`` runs on every sendmsg() of those sockets, once per 32-byte
descriptor, and moves the descriptor into the receive queue of the socket registered
under its ``next_hop`` in a SOCKHASH: the TCP stack is bypassed, the receiver's epoll
wakes as for any data, and one send() can carry a batch for many destinations.

Life cycle: ``start()`` (supervisor) compiles and loads the program with bcc, attaches it
to the sockhash and pins the maps under ``/sys/fs/bpf/spright-<runtime dir>-<pid>/``;
``attach()`` (any process) opens the pinned sockhash with the raw bpf(2) syscall — no bcc,
no LLVM in workers — and inserts its freshly connected socket. ``stop()`` unpins, and the
kernel frees maps and program once the last file descriptor is gone. A crashed supervisor
leaves its pin directory (and so the maps and program) behind; the next ``start()`` on the
machine removes pin directories whose owner pid is dead.

Kernel behaviour designed around (kernel 6.18): a descriptor the program drops (SK_DROP)
fails a lone send() with EACCES (uvloop then closes the endpoint) and, inside a batch,
makes send() return short and loses the descriptors after it; so undeliverable
descriptors are redirected to a sink socket that the supervisor drains, never dropped.
A full receiver never pushes back: redirected data is charged to the receiver beyond its
SO_RCVBUF (up to ``net.ipv4.tcp_mem``), so send() does not return EAGAIN and flow control
must come from the callers (in-flight limits).
A write the kernel splits inside a descriptor is harmless once the 6-byte header is in:
the verdict covers the descriptor's remaining bytes whenever they are sent (``cork_bytes``
looked like the tool for the rest, but misrouted and duplicated descriptors here).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import platform
import re
import selectors
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from spright.descriptor import SIZE
from spright.routing import RouteTable
from spright.transport.base import Endpoint, Receiver, RecordBuffer, Transport

MAX_ENDPOINTS = 1024  # endpoint ids are 0..MAX_ENDPOINTS-1 (sizes the BPF maps)
# One sendmsg() of more than ~68 KiB can outgrow the kernel's 17-element scatterlist and be
# split at any byte; a split inside a descriptor's first 6 bytes loses that descriptor.
MAX_WRITE = 1024 * SIZE
SINK = MAX_ENDPOINTS  # sockhash key of the supervisor's socket for undeliverable descriptors
SOURCE = Path(__file__).resolve().parents[2] / "ebpf" / "skmsg.c"
BPF_FS = Path("/sys/fs/bpf")
CFLAGS = [f"-DMAX_ENDPOINTS={MAX_ENDPOINTS}", f"-DDESCRIPTOR_SIZE={SIZE}"]

# bpf(2) without bcc: commands and the two bpf_attr layouts we need (linux/bpf.h)
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM, _OBJ_PIN, _OBJ_GET = 1, 2, 6, 7
_libc = ctypes.CDLL(None, use_errno=True)


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _PathAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(cmd={cmd}): {os.strerror(err)}")
    return int(ret)


def _pin(fd: int, path: Path) -> None:
    name = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(_OBJ_PIN, _PathAttr(pathname=ctypes.addressof(name), bpf_fd=fd))


def _open_pinned(path: Path) -> int:
    name = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(_OBJ_GET, _PathAttr(pathname=ctypes.addressof(name)))


def _insert_socket(map_fd: int, key: int, sock: socket.socket) -> None:
    """Map ``key`` to ``sock`` (BPF_ANY: replaces the socket of a restarted worker)."""
    k, v = ctypes.c_uint32(key), ctypes.c_uint32(sock.fileno())
    _bpf(_MAP_UPDATE_ELEM, _ElemAttr(map_fd=map_fd, key=ctypes.addressof(k), value=ctypes.addressof(v)))


class Counters(NamedTuple):
    """One endpoint's descriptor counters, summed over CPUs (struct counters in skmsg.c)."""

    sent: int  # descriptors whose sender field is this endpoint
    received: int  # descriptors redirected into this endpoint's socket
    dropped: int  # descriptors addressed to this endpoint while it was not attached
    malformed: int  # descriptors from this endpoint naming no valid next hop


@functools.cache
def _possible_cpus() -> int:
    """Per-CPU map values have one slot per *possible* CPU, not per online CPU."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return sum(int(p.split("-")[-1]) - int(p.split("-")[0]) + 1 for p in text.split(","))


def _pin_dir(runtime_dir: Path) -> Path:
    """Unique per node, and names the owner pid so that a later start() can sweep it."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", runtime_dir.name)  # bpffs rejects dots
    return BPF_FS / f"spright-{safe}-{os.getpid()}"


def _unpin(pin_dir: Path) -> None:
    if pin_dir.is_dir():
        for pin in pin_dir.iterdir():
            pin.unlink()
        pin_dir.rmdir()


def _sweep_stale_pins() -> None:
    """Remove pin directories left by crashed supervisors (owner pid no longer exists)."""
    for pin_dir in BPF_FS.glob("spright-*-*"):
        pid = pin_dir.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _unpin(pin_dir)
        except PermissionError:
            pass  # alive, owned by someone else


def _mount_bpffs() -> None:
    """Mount bpffs where systemd normally does (bpftool does the same when it pins)."""
    if os.path.ismount(BPF_FS):
        return
    if _libc.mount(b"bpf", os.fsencode(BPF_FS), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t bpf bpf {BPF_FS}: {os.strerror(err)}")


def _has_capabilities() -> bool:
    """CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21, mount and pin), CAP_BPF (39)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
            return all(caps >> bit & 1 for bit in (12, 21, 39))
    return False


@functools.cache
def _probe() -> str | None:
    if _SYS_BPF is None:
        return f"no bpf(2) syscall number known for {platform.machine()}: use --transport unix"
    if not _has_capabilities():
        return "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run as root or use --transport unix"
    try:
        from bcc import BPF
    except ImportError:
        return (
            "bcc is not importable: apt-get install python3-bpfcc and put "
            "/usr/lib/python3/dist-packages on the venv's path (a .pth file)"
        )
    release = os.uname().release
    if not (Path(f"/lib/modules/{release}/build").exists() or Path("/sys/kernel/kheaders.tar.xz").exists()):
        return f"no kernel headers for {release}: run ebpf/setup-headers.sh"
    try:
        bpf = BPF(src_file=str(SOURCE).encode(), cflags=CFLAGS)
        try:
            bpf.load_func(b"spright_msg", BPF.SK_MSG)
        finally:
            bpf.cleanup()
    except Exception as exc:  # bcc raises bare Exception for compile and load errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"the kernel rejected the sk_msg program (needs BPF sockmap support): {first}"
    return None


class SkmsgTransport(Transport):
    name = "skmsg"

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        super().__init__(runtime_dir, table)
        if any(not 0 <= e < MAX_ENDPOINTS for e in self.endpoints):
            raise ValueError(f"endpoint ids must be in 0..{MAX_ENDPOINTS - 1}: {self.endpoints}")
        self.pin_dir = _pin_dir(runtime_dir)
        self.port = 0  # the dummy listener's, set by start()
        self._bpf: Any = None  # bcc.BPF, supervisor only
        self._listener: _Listener | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Checks privileges, bcc, headers, then compiles and loads once (cached)."""
        return _probe()

    def __getstate__(self) -> dict[str, Any]:
        """Workers need only paths and the port; bcc objects and threads stay home."""
        keep = ("runtime_dir", "table", "endpoints", "pin_dir", "port")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _bpf=None, _listener=None)

    @property
    def tcp_bytes(self) -> int:
        """Bytes that reached the dummy listener over TCP: 0 while every send is redirected."""
        return self._listener.tcp_bytes if self._listener else 0

    def start(self) -> None:
        from bcc import BPF, BPFAttachType, lib

        _mount_bpffs()
        _sweep_stale_pins()
        self.pin_dir = _pin_dir(self.runtime_dir)  # named after the pinning process
        try:
            self._bpf = BPF(src_file=str(SOURCE).encode(), cflags=CFLAGS)
            fn = self._bpf.load_func(b"spright_msg", BPF.SK_MSG)
            socks_fd = lib.bpf_table_fd(self._bpf.module, b"spright_socks")
            BPF.attach_func(fn, socks_fd, BPFAttachType.SK_MSG_VERDICT)
            self.pin_dir.mkdir(mode=0o700)
            _pin(socks_fd, self.pin_dir / "socks")
            _pin(lib.bpf_table_fd(self._bpf.module, b"spright_stats"), self.pin_dir / "stats")
            self._listener = _Listener()
            self.port = self._listener.port
            sink = socket.create_connection(("127.0.0.1", self.port))
            self._listener.start(sink)
            _insert_socket(socks_fd, SINK, sink)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Idempotent. The kernel frees maps and program once no fd or pin refers to them."""
        if self._listener:
            self._listener.close()
            self._listener = None
        _unpin(self.pin_dir)
        if self._bpf is not None:
            self._bpf.cleanup()  # closes our program and map fds
            self._bpf = None

    async def attach(self, endpoint_id: int, on_receive: Receiver) -> Endpoint:
        if not 0 <= endpoint_id < MAX_ENDPOINTS:
            raise ValueError(f"endpoint id {endpoint_id} is not in 0..{MAX_ENDPOINTS - 1}")
        if not self.port:
            raise RuntimeError("SkmsgTransport.attach() before start()")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
            # In the map before it carries any byte, else the first send goes out over TCP.
            map_fd = _open_pinned(self.pin_dir / "socks")
            try:
                _insert_socket(map_fd, endpoint_id, sock)
            finally:
                os.close(map_fd)
            transport, _ = await loop.create_connection(lambda: _Inbound(on_receive), sock=sock)
        except BaseException:
            sock.close()
            raise
        return _SkmsgEndpoint(transport)

    def counters(self) -> dict[int, Counters]:
        """Live counters of this node's endpoints, from the pinned map (any process)."""
        ncpu = _possible_cpus()
        fields = len(Counters._fields)
        values = (ctypes.c_uint64 * (fields * ncpu))()
        key = ctypes.c_uint32()
        map_fd = _open_pinned(self.pin_dir / "stats")
        result = {}
        try:
            for endpoint_id in self.endpoints:
                key.value = endpoint_id
                _bpf(
                    _MAP_LOOKUP_ELEM,
                    _ElemAttr(map_fd=map_fd, key=ctypes.addressof(key), value=ctypes.addressof(values)),
                )
                result[endpoint_id] = Counters(
                    *(sum(values[cpu * fields + f] for cpu in range(ncpu)) for f in range(fields))
                )
        finally:
            os.close(map_fd)
        return result


class _Inbound(asyncio.Protocol):
    def __init__(self, on_receive: Receiver) -> None:
        self._on_receive = on_receive
        self._buffer = RecordBuffer()

    def data_received(self, data: bytes) -> None:
        whole = self._buffer.feed(data)
        if whole:
            self._on_receive(whole)


class _SkmsgEndpoint(Endpoint):
    """Sends through the event loop's transport: one write() syscall per batch when the
    socket is writable (always, in practice: redirects never push back), else buffered
    behind a writer callback."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def send(self, data: bytes) -> None:
        if len(data) % SIZE:
            raise ValueError(f"{len(data)} bytes is not a whole number of descriptors")
        if len(data) <= MAX_WRITE:
            self._transport.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), MAX_WRITE):
            self._transport.write(view[start : start + MAX_WRITE])

    def close(self) -> None:
        self._transport.close()  # a closed socket leaves the sockhash by itself


class _Listener:
    """The dummy TCP peer of every endpoint socket, plus the drain of the sink socket.

    Accepted connections are never written; reading them only notices EOF (to close the
    peer of an exited worker) and counts bytes that bypassed the redirect (a bug). The
    sink's queue receives the descriptors the program could not deliver; it is discarded.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=socket.SOMAXCONN)
        self.port: int = self._server.getsockname()[1]
        self.tcp_bytes = 0
        self._buffer = bytearray(1 << 16)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="spright-skmsg", daemon=True)
        self._watch(self._server, self._accept)
        self._watch(self._wake_r, None)

    def _watch(self, sock: socket.socket, handler: Callable[[socket.socket], None] | None) -> None:
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, handler)

    def start(self, sink: socket.socket) -> None:
        self._watch(sink, self._drain)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                with contextlib.suppress(OSError):  # EAGAIN, EINTR, EMFILE: retry on next readiness
                    key.data(key.fileobj)

    def _accept(self, server: socket.socket) -> None:
        conn, _ = server.accept()
        self._watch(conn, self._peer)

    def _peer(self, conn: socket.socket) -> None:
        try:
            n = conn.recv_into(self._buffer)
        except ConnectionError:
            n = 0
        if n:
            self.tcp_bytes += n
        else:
            self._selector.unregister(conn)
            conn.close()

    def _drain(self, sink: socket.socket) -> None:
        if not sink.recv_into(self._buffer):
            self._selector.unregister(sink)
            sink.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"\0")
            self._thread.join()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        self._wake_w.close()
