"""The few bpf(2) operations spright needs, through ctypes: no bcc and no LLVM outside the
supervisor, so workers and the ``spright stats`` CLI stay light and fast to start.

Maps here hold u32 keys; values are u32 or (per-CPU) arrays of u64 counters.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from collections.abc import Iterator, Sequence
from pathlib import Path

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
BPF_FS = Path("/sys/fs/bpf")
# commands (linux/bpf.h)
_LOOKUP, _UPDATE, _DELETE, _NEXT_KEY, _OBJ_PIN, _OBJ_GET, _UPDATE_BATCH = 1, 2, 3, 4, 6, 7, 26
_libc = ctypes.CDLL(None, use_errno=True)


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # next_key for _NEXT_KEY
        ("flags", ctypes.c_uint64),
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _PathAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(cmd={cmd}): {os.strerror(err)}")
    return int(ret)


def pin(fd: int, path: Path) -> None:
    name = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(_OBJ_PIN, _PathAttr(pathname=ctypes.addressof(name), bpf_fd=fd))


def open_pinned(path: Path) -> int:
    name = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(_OBJ_GET, _PathAttr(pathname=ctypes.addressof(name)))


class PinnedMap:
    """A pinned map opened for the duration of a ``with`` block."""

    def __init__(self, path: Path) -> None:
        self.fd = open_pinned(path)

    def __enter__(self) -> PinnedMap:
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)

    def _elem(self, key: ctypes.c_uint32, value: ctypes.Array | ctypes._SimpleCData | None = None) -> _ElemAttr:
        return _ElemAttr(
            map_fd=self.fd,
            key=ctypes.addressof(key),
            value=ctypes.addressof(value) if value is not None else 0,
        )

    def update(self, key: int, value: int) -> None:
        """Map ``key`` to ``value`` (BPF_ANY); for a sockhash the value is a socket fd."""
        k, v = ctypes.c_uint32(key), ctypes.c_uint32(value)
        _bpf(_UPDATE, self._elem(k, v))

    def update_i64(self, key: int, value: int) -> None:
        """Map ``key`` to ``value`` in a map of signed 64-bit values."""
        k, v = ctypes.c_uint32(key), ctypes.c_int64(value)
        _bpf(_UPDATE, self._elem(k, v))

    def lookup_i64(self, key: int) -> int | None:
        k, v = ctypes.c_uint32(key), ctypes.c_int64()
        try:
            _bpf(_LOOKUP, self._elem(k, v))
        except FileNotFoundError:
            return None
        return v.value

    def lookup(self, key: int) -> int | None:
        k, v = ctypes.c_uint32(key), ctypes.c_uint32()
        try:
            _bpf(_LOOKUP, self._elem(k, v))
        except FileNotFoundError:
            return None
        return v.value

    def lookup_percpu(self, key: int, fields: int) -> list[int]:
        """A per-CPU value of ``fields`` u64s, summed over every possible CPU."""
        ncpu = possible_cpus()
        k, values = ctypes.c_uint32(key), (ctypes.c_uint64 * (fields * ncpu))()
        _bpf(_LOOKUP, self._elem(k, values))
        return [sum(values[cpu * fields + f] for cpu in range(ncpu)) for f in range(fields)]

    def delete(self, key: int) -> None:
        k = ctypes.c_uint32(key)
        with contextlib.suppress(FileNotFoundError):  # already gone
            _bpf(_DELETE, self._elem(k))

    def snapshot_keys(self) -> Iterator[int]:
        """Keys of a hash map (a snapshot taken before yielding, so callers may delete)."""
        found: list[int] = []
        key, next_key = ctypes.c_uint32(), ctypes.c_uint32()
        attr = _ElemAttr(map_fd=self.fd, key=0, value=ctypes.addressof(next_key))
        while True:
            try:
                _bpf(_NEXT_KEY, attr)
            except FileNotFoundError:  # ENOENT: past the last key
                return iter(found)
            found.append(next_key.value)
            key.value = next_key.value
            attr.key = ctypes.addressof(key)

    def fill(self, values: Sequence[int]) -> None:
        """Set entries 0..len(values)-1 of an array in one syscall (BPF_MAP_UPDATE_BATCH)."""
        n = len(values)
        keys, vals = (ctypes.c_uint32 * n)(*range(n)), (ctypes.c_uint32 * n)(*values)
        attr = _BatchAttr(keys=ctypes.addressof(keys), values=ctypes.addressof(vals), count=n, map_fd=self.fd)
        _bpf(_UPDATE_BATCH, attr)
        if attr.count != n:
            raise OSError(f"BPF_MAP_UPDATE_BATCH wrote {attr.count} of {n} entries")


@functools.cache
def possible_cpus() -> int:
    """Per-CPU map values have one slot per *possible* CPU, not per online CPU."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return sum(int(p.split("-")[-1]) - int(p.split("-")[0]) + 1 for p in text.split(","))


def unpin(pin_dir: Path) -> None:
    if pin_dir.is_dir():
        for pinned in pin_dir.iterdir():
            pinned.unlink()
        pin_dir.rmdir()


def sweep_stale_pins() -> None:
    """Remove pin directories left by crashed supervisors (owner pid no longer exists)."""
    for pin_dir in BPF_FS.glob("spright-*-*"):
        pid = pin_dir.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            unpin(pin_dir)
        except PermissionError:
            pass  # alive, owned by someone else


def mount_bpffs() -> None:
    """Mount bpffs where systemd normally does (bpftool does the same when it pins)."""
    if os.path.ismount(BPF_FS):
        return
    if _libc.mount(b"bpf", os.fsencode(BPF_FS), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t bpf bpf {BPF_FS}: {os.strerror(err)}")


def has_capabilities() -> bool:
    """CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21, mount and pin), CAP_BPF (39)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
            return all(caps >> bit & 1 for bit in (12, 21, 39))
    return False
