"""What every process of a node does about itself: a name ``ps`` shows, and death with its parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal


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
