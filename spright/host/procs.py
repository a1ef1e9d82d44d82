"""What every process of a node does about itself: a name ``ps`` shows, and death with its parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def name_process(title: str) -> None:
    """What ``ps`` and ``top`` show for this process: ``spright: <title>`` (setproctitle),
    instead of every worker reading ``python -c from multiprocessing.spawn import ...``."""
    import setproctitle

    setproctitle.setproctitle(f"spright: {title}")


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed supervisor must not leave orphan workers."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
