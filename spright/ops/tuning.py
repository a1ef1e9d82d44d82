"""Machine facts that change spright's latency, reported by ``spright doctor``.

Neither is spright's to change: both are settings of the machine (or of its VM host), so
the doctor names them and says why they cost (docs/performance.md has figures).
"""

from __future__ import annotations

from pathlib import Path

from spright import native

HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def shared_libpython() -> str | None:
    """The interpreter's library when it runs from a shared libpython (``--enable-shared``
    builds such as pyenv's): position-independent code without PGO, slower on every hot path."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.rsplit(" ", 1)[-1]
        if "/libpython3" in path:
            return path
    return None


def halt_polling_off() -> bool:
    """True in a VM whose guest halt polling is switched off: an idle vCPU then sleeps in
    HLT, and waking it for the next hop costs a VM exit and re-entry."""
    try:
        return HALT_POLL.read_text().strip() == "0"
    except OSError:
        return False


def latency_hints() -> list[tuple[str, bool, str]]:
    """(check, fine, what it means) rows."""
    library = shared_libpython()
    interpreter = (
        f"runs from {library}: a shared, non-PGO interpreter, slower on every hot path. Build the venv "
        "from Debian's /usr/bin/python3 (make does)"
        if library
        else "statically linked interpreter"
    )
    polling_off = halt_polling_off()
    idle = (
        f"guest halt polling is off ({HALT_POLL} = 0): waking an idle CPU costs a VM exit, paid "
        "by most hops at low load. `echo 200000 >` it to let idle CPUs spin up to 200 us "
        "before they halt (lower latency, more CPU burnt while idle)"
        if polling_off
        else "idle CPUs wake without a VM round trip (or this is not such a VM)"
    )
    compiled = native.STATE == "compiled"
    hot_path = (f"{len(native.MODULES)} modules compiled with mypyc" if compiled
                else f"{native.STATE}: the request path runs as Python, slower")
    return [("interpreter", library is None, interpreter), ("idle-CPU wake-up", not polling_off, idle),
            ("hot path", compiled, hot_path)]
