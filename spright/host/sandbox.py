"""What a worker process can reach once it serves: its own domain's memory, and no more.

Each security domain has a pool of its own (spright/host/pools.py), and a worker is handed only
its domain's. But every process of a node runs as the same user, so a hostile function could
still open another domain's segment by name in /dev/shm, or read it out of the gateway's
memory through /proc. A worker therefore closes those doors before its first handler runs:

1. ``enter()``, first thing in the process (unshare needs a single thread): a mount namespace
   of its own, so what it mounts is seen by nobody else;
2. ``seal()``, once it has attached to its pool, counters and data plane: an empty tmpfs over
   /dev/shm (segments already mapped stay mapped; no other can be opened by name), then it
   drops the capabilities that would undo that or reach around it (mount, ptrace, BPF, raw
   devices, file handles), forbids regaining them (no_new_privs, bounding set) and makes
   itself non-dumpable (no other worker reads its memory through /proc).

3. ``drop_to(user)``, right after ``seal()`` and before the worker says READY: it becomes an
   unprivileged user (``spright run --user``; ``spright``, else ``nobody``, by default), as
   nginx's and gunicorn's workers do: no supplementary groups, then the real, effective and
   saved gid and uid. A compromised handler is then no longer root on the host: it cannot
   open root's files nor signal the gateway. Whatever it reaches later it opened before
   (its pool, counters, span rings, the live instances' file, its data plane's sockets) or
   may reach as the workers' group (the data plane's socket files: spright.transport.base).

Where sealing cannot be done (not root, no mount namespaces) the worker serves unsealed, and
says so once. Capabilities, no_new_privs and the bounding set are per thread: a thread
started before ``seal()`` would keep them, so a data plane whose ``attach`` starts threads
(grpc's) is attached after ``seal()`` and ``drop_to()`` (``Transport.attach_unprivileged``).
The uids are per thread in the kernel too, but glibc's setresuid changes every thread's.
"""

from __future__ import annotations

import ctypes
import grp
import logging
import os
import pwd
from pathlib import Path

from spright.data.config import Config

log = logging.getLogger("spright.host.sandbox")

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 4, 24, 38
CAPABILITY_VERSION_3 = 0x20080522
DROPPED_CAPABILITIES = {  # number: why a worker must not keep it
    2: "CAP_DAC_READ_SEARCH (open_by_handle_at reaches files by handle, around mounts)",
    12: "CAP_NET_ADMIN (attach or detach BPF programs, change the data plane)",
    16: "CAP_SYS_MODULE (load kernel code)",
    17: "CAP_SYS_RAWIO (/dev/mem and raw I/O)",
    19: "CAP_SYS_PTRACE (read another process's memory)",
    21: "CAP_SYS_ADMIN (unmount the empty /dev/shm, enter other namespaces, /proc/PID/map_files)",
    27: "CAP_MKNOD (device nodes)",
    38: "CAP_PERFMON (read kernel and process memory through perf and BPF)",
    39: "CAP_BPF (read or rewrite the routes and domains in the BPF maps)",
}

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def enter() -> bool:
    """A private mount namespace for this process; False (logged) where it cannot have one."""
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    except OSError as exc:
        log.warning("spright: this worker is not sealed off from other domains' memory (%s); "
                    "per-domain isolation needs CAP_SYS_ADMIN (root, or a container that adds it)", exc)
        return False
    return True


def seal() -> None:
    """After ``enter()`` and every attachment: hide /dev/shm and drop what could undo it."""
    _check(_libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"mode=1777,size=16m"),
           "mount an empty tmpfs on /dev/shm")
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    for capability in DROPPED_CAPABILITIES:
        _check(_libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0), f"drop capability {capability} from the bounding set")
    header, data = _CapHeader(CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for capability in DROPPED_CAPABILITIES:
        word, bit = divmod(capability, 32)
        mask = ~(1 << bit) & 0xFFFFFFFF
        data[word].effective &= mask
        data[word].permitted &= mask
        data[word].inheritable &= mask
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def worker_ids(user: str | None) -> tuple[int, int] | None:
    """The uid and gid workers drop to (``Config.worker_user``); None when they keep who they are."""
    return None if user in (None, "root") else ids_of(user)


def workers_user(config: Config, files: list[str], base: Path) -> str | None:
    """``Config.user`` for the workers of this node: as configured when they can read ``files``
    (the app's and its libraries'; a worker imports and reads them after its drop) and reach
    ``base``, where the node's runtime directory and the app's data go; "root" when the default
    user (``spright``, else ``nobody``) cannot, said once; ValueError when an explicit ``--user``
    cannot."""
    user = config.worker_user
    if user in (None, "root") or config.node_dir is not None:
        return config.user
    blocked = unreadable(files, user) or unreadable([str(base)], user, search=True)
    if blocked is None:
        return config.user
    if config.user is not None:
        raise ValueError(f"--user {user}: that user cannot read {blocked}, which the workers need (the app or "
                         f"its libraries): make it readable to {user}, or choose another user")
    log.warning("spright: the workers keep root: %r, the user they would run as, cannot read %s (the app or its "
                "libraries); make it readable to %r, or pass --user", user, blocked, user)
    return "root"


def unreadable(paths: list[str], user: str, search: bool = False) -> str | None:
    """The first of ``paths`` (files; directories to search, with ``search``) that ``user``
    could not read, going by the modes of the path and the directories above it, or None when
    it can reach them all. A path not made yet counts from its nearest existing directory."""
    uid, gid = ids_of(user)
    groups = {gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    for path in paths:
        target = Path(path).resolve()
        while not target.exists():
            target, search = target.parent, True
        for place, need in [*((d, 0o1) for d in reversed(target.parents)), (target, 0o1 if search else 0o4)]:
            mode = place.stat()
            shift = 6 if mode.st_uid == uid else 3 if mode.st_gid in groups else 0
            if not (mode.st_mode >> shift) & need:
                return str(place)
    return None


def ids_of(user: str) -> tuple[int, int]:
    """``user``'s uid and primary gid; ValueError when this machine has no such user."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no user {user!r} on this machine (spright run --user; make setup creates 'spright')") \
            from None
    return entry.pw_uid, entry.pw_gid


def drop_to(user: str) -> None:
    """Become ``user`` for good, every thread of the process: no supplementary groups, then
    the real, effective and saved gid, then uid (which clears every capability left, and the
    parent-death signal: the caller asks for it again)."""
    uid, gid = ids_of(user)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if privileged_threads():
        raise OSError(f"a thread of this process kept root after the drop to {user}: {privileged_threads()}")


def privileged_threads(pid: str = "self") -> list[str]:
    """The threads of ``pid`` with a uid or gid 0, or any effective or permitted capability."""
    held = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "status") as status:
            fields = dict(line.split(":", 1) for line in status)
        ids = fields["Uid"].split() + fields["Gid"].split()
        if "0" in ids or int(fields["CapEff"], 16) or int(fields["CapPrm"], 16):
            held.append(task.name)
    return held
