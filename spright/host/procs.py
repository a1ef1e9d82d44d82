"""What every process of a node does about itself: a name ``ps`` shows, and death with its parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable
from typing import Protocol


def name_process(title: str) -> None:
    """What ``ps`` and ``top`` show for this process: ``spright: <title>`` (setproctitle),
    instead of every worker reading ``python -c from multiprocessing.spawn import ...``."""
    import setproctitle

    setproctitle.setproctitle(f"spright: {title}")


def die_with_parent(parent: int = 0) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed supervisor must not leave orphan workers (nor the node's
    template, nor the workers forked from it). ``parent``: the pid of the process that started
    this one; if it is no longer the parent, it died before the signal was asked for: die now."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if parent and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


class Joinable(Protocol):
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def kill(self) -> None: ...


def join_all(processes: Iterable[Joinable], timeout: float) -> None:
    """Wait for ``processes`` to exit, ``timeout`` in all; kill those that do not."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0))
        if process.is_alive():
            process.kill()
            process.join(1)
