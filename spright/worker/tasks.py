"""How a handler's coroutine runs: inline when it never suspends, else as a Task (started
eagerly where Python can), and what a cancelled Task was cancelled with."""

from __future__ import annotations

import asyncio
import dis
import inspect
import sys
from collections.abc import Coroutine
from typing import Any

if sys.version_info >= (3, 12):

    def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run the handler's first step now: a handler that never awaits costs no loop trip."""
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return loop.create_task(coro)


PAST_DEADLINE = "the chain's timeout passed"  # the cancel message of a handler the worker ended


def cancel_message(task: asyncio.Task[None]) -> tuple[Any, ...]:
    """What a cancelled ``task`` was cancelled with (its result() raises it; read it once)."""
    try:
        task.result()
    except asyncio.CancelledError as exc:
        return exc.args
    return ()


def never_suspends(handler: Any) -> bool:
    """True for a coroutine function with no await point in its body (no YIELD_VALUE in its
    bytecode): its coroutine finishes on the first step, so it needs neither a Task nor a
    loop iteration. Everything else (sync functions, wrappers, callables) gets a Task."""
    code = getattr(handler, "__code__", None)
    if code is None or not inspect.iscoroutinefunction(handler):
        return False
    return not any(instruction.opname == "YIELD_VALUE" for instruction in dis.get_instructions(code))
