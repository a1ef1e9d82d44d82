"""What a failed handler answers: the status and the JSON error body its caller (or the
client) gets, logged as its kind deserves: a callee's failure and a 4xx as information, an
unexpected exception with its traceback under an id the answer carries; and the error of a
result larger than the node lets a handler answer."""

from __future__ import annotations

import logging
import secrets
import traceback
from typing import Any

from spright.host.pool import PoolExhausted
from spright.worker.context import CallError, HTTPError

log = logging.getLogger("spright.worker")


def error_answer(exc: Exception, function: str) -> tuple[int, dict[str, Any]]:
    """(status, body) for ``exc`` raised in ``function``'s handler (or for it: a 504 when
    it waited past its chain's timeout)."""
    body: dict[str, Any]
    if isinstance(exc, CallError):  # the callee's failure, as the callee said it
        status, body = exc.status, {"error": exc.detail or "error", "status": exc.status, "function": exc.function}
        if exc.error_id:
            body["error_id"] = exc.error_id  # the id in the callee's log
        log.info("%s: %s", function, str(exc))
    elif isinstance(exc, HTTPError):
        status = exc.status
        body = {"error": exc.detail or "error", "status": status, "function": function}
        if status < 500:
            log.info("%s: %s", function, str(exc))
    else:
        error_id = secrets.token_hex(6)
        status = 503 if isinstance(exc, PoolExhausted) else 500
        body = {"error": "internal server error", "status": status, "function": function, "error_id": error_id}
        trace = "".join(traceback.format_exception(exc))  # text: a kept record must not pin the slot
        log.error("%s failed (error_id=%s)\n%s", function, error_id, trace)
    return status, body


def too_large(function: str, size: int, limit: int) -> HTTPError:
    """A result over the response limit: a 500 (the app broke its own node's setting;
    nothing upstream failed, so not a 502) that says what to raise, not an anonymous one."""
    detail = (f"{function} returned {size} bytes, over the response limit of {limit} bytes: raise "
              f"PoolConfig.max_response (e.g. App(pool=PoolConfig(max_response=...)))")
    log.error("%s", detail)
    return HTTPError(500, detail)
