"""The skmsg data plane's eBPF program: its source (``ebpf/skmsg.c``), the constants it is
compiled with (the map sizes, the descriptor layout and kinds, from the one place each is
written), and ``probe``, which compiles and loads it once to tell whether this machine can
run it (``spright doctor``, ``--transport auto``)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from spright.data.descriptor import (
    CALL,
    DOWN,
    END,
    ERROR,
    GATEWAY_SHIFT,
    KIND_MASK,
    OFFSETS,
    PART,
    READY,
    REFUSED,
    REQUEST,
    RESPONSE,
    SIZE,
)
from spright.data.table import MAX_GATEWAYS
from spright.host.instances import GROUP_BITS
from spright.transport import bpf
from spright.transport.skmsg_maps import MAX_CHAINS, MAX_ENDPOINTS, MAX_HOPS, MAX_INSTANCES, NO_ROUTE

MAX_RUN = 256  # descriptors one verdict may cover (a bounded loop in the program)
NEXT_IN_CHAIN = 0xFFFFFFFF  # next_hop telling the program: the endpoint at (chain, hop) in the route map
SOURCE = Path(__file__).with_name("skmsg.c")  # a link to ebpf/skmsg.c; a copy of it in wheels
CFLAGS = [
    f"-D{name}={value}"
    for name, value in (
        ("MAX_ENDPOINTS", MAX_ENDPOINTS),
        ("MAX_CHAINS", MAX_CHAINS),
        ("MAX_HOPS", MAX_HOPS),
        ("MAX_INSTANCES", MAX_INSTANCES),
        ("GROUP_BITS", GROUP_BITS),
        ("REQUEST", REQUEST),
        ("CALL", CALL),
        ("RESPONSE", RESPONSE),
        ("ERROR", ERROR),
        ("PART", PART),
        ("END", END),
        ("READY", READY),
        ("DOWN", DOWN),
        ("MAX_GATEWAYS", MAX_GATEWAYS),
        ("GATEWAY_SHIFT", GATEWAY_SHIFT),
        ("MAX_RUN", MAX_RUN),
        ("DESCRIPTOR_SIZE", SIZE),
        ("NEXT_IN_CHAIN", f"{NEXT_IN_CHAIN:#x}U"),
        ("NO_ROUTE", f"{NO_ROUTE:#x}U"),
        ("KIND_MASK", KIND_MASK),
        ("REFUSED", REFUSED),
        *((f"OFF_{field.upper()}", offset) for field, offset in OFFSETS.items()),
    )
]
def cflags(balance: str) -> list[str]:
    """The program for ``balance`` (``LiveInstances.balance``): how it picks an instance."""
    return [*CFLAGS, f"-DLEAST_IN_FLIGHT={int(balance == 'least_in_flight')}"]


@functools.cache
def probe() -> str | None:
    if bpf.SYS_BPF is None:
        return f"no bpf(2) syscall number known for {os.uname().machine}: use --transport unix"
    if not bpf.has_capabilities():
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
        loaded = BPF(src_file=str(SOURCE).encode(), cflags=cflags("least_in_flight"))  # the larger program
    except Exception as exc:  # bcc raises bare Exception; clang's messages went to stderr
        return f"{SOURCE.name} did not compile (clang's errors are on stderr above): {_first_line(exc)}"
    try:
        loaded.load_func(b"spright_msg", BPF.SK_MSG)
    except Exception as exc:
        return f"the kernel rejected the sk_msg program (needs BPF sockmap support): {_first_line(exc)}"
    finally:
        loaded.cleanup()
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
