"""transport: the data planes behind one interface (base.py), one module per plane;
``select_transport`` picks one by name or ``auto``. May import spright.host and spright.data."""

from __future__ import annotations

from pathlib import Path

from spright.data.config import Config
from spright.data.table import RouteTable
from spright.host.sandbox import ids_of
from spright.transport.base import Transport
from spright.transport.grpc import GrpcTransport
from spright.transport.http import HttpTransport
from spright.transport.poll import PollTransport
from spright.transport.unix import UnixTransport


def registry() -> dict[str, type[Transport]]:
    """Transports users can choose, best first (``auto`` takes the first available)."""
    found: dict[str, type[Transport]] = {}
    try:
        from spright.transport.skmsg import SkmsgTransport

        found["skmsg"] = SkmsgTransport
    except ImportError:
        pass
    found["unix"] = UnixTransport
    found["poll"] = PollTransport  # D-SPRIGHT: burns a core per process, never chosen by auto over unix
    found["http"] = HttpTransport  # Knative-like baseline
    found["grpc"] = GrpcTransport  # upstream Online Boutique's services: unary gRPC calls
    return found


def select_transport(runtime_dir: Path, table: RouteTable, config: Config) -> tuple[Transport, str | None]:
    """The transport ``config`` names and, when ``auto`` had to fall back, one line saying why."""
    transport, note = _select(runtime_dir, table, config)
    transport.instances.balance = config.balance
    user = config.worker_user
    if user not in (None, "root") and config.node_dir is None:  # a pod's workers: their containers say
        transport.share_with(ids_of(user)[1])
    elif config.node_dir is not None and config.workers_group is not None:  # ... and so does the pod's gateway
        transport.share_with(config.workers_group)
    return transport, note


def _select(runtime_dir: Path, table: RouteTable, config: Config) -> tuple[Transport, str | None]:
    name = config.transport
    transports = registry()
    if name == "auto":
        for candidate, cls in transports.items():
            reason = cls.unavailable_reason()
            if reason is None:
                note = None if candidate == next(iter(transports)) else _fallback_note(transports)
                return cls.from_config(runtime_dir, table, config), note
        raise RuntimeError("no transport is available on this machine")
    if name not in transports:
        raise ValueError(f"unknown transport {name!r}; choose from: auto, {', '.join(transports)}")
    reason = transports[name].unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"transport {name!r} is not available here: {reason}")
    return transports[name].from_config(runtime_dir, table, config), None


def _fallback_note(transports: dict[str, type[Transport]]) -> str:
    best = next(iter(transports))
    return f"transport {best} unavailable ({transports[best].unavailable_reason()}); falling back to unix"
