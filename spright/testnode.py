"""Tests against a real node: ``run_node`` starts ``spright run`` as a subprocess (the real
data plane, real processes), ``node_metric`` reads its ``/metrics``, ``free_port`` finds a
port for a node that must be told its port. ``spright.testing`` re-exports them."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO


def free_port() -> int:
    """A port free now, for a node that must be told its port before it starts. Picked below
    the kernel's ephemeral range: a port from that range (what binding port 0 gives) may be
    handed, before the node binds it, to any socket bound to port 0 meanwhile (the endpoints of
    the http data plane, a client's connection), and the node then fails to start."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(min(10_000, low // 2), low)
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError(f"no free port below the ephemeral range (which starts at {low})")


def node_metric(port: int, name: str) -> float:
    """One sample of a running node's ``GET /metrics``, by its full name (labels included, e.g.
    ``spright_pool_slots_in_use`` or ``spright_responses_total{status="5xx"}``)."""
    import http.client
    import re

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    if found is None:
        raise KeyError(f"{name} is not in the node's /metrics")
    return float(found.group(1))


@contextlib.contextmanager
def run_node(app_ref: str, *, transport: str | None = "unix", port: int | None = 0, args: tuple[str, ...] = (),
             env: Mapping[str, str] | None = None,
             startup_timeout: float = 60.0,
             log: BinaryIO | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Run ``spright run APP_REF`` in a subprocess; yields (port, process) once it serves.
    ``transport``: the data plane, followed by its options if any (``"http --sidecar"``);
    ``env``: variables added to this process's environment for the node. With ``port`` 0
    the node binds a port of the kernel's choosing, read back from its node.json (a port
    picked here and bound there could meanwhile go to one of the node's own endpoints).
    ``transport`` or ``port`` None: not given, so the app's Config decides; ``log``: a file the
    node's stderr goes to (else a temporary one, shown if it exits early)."""
    from spright.host.nodefile import BadNodeFile, NodeFile, runtime_base

    command = [sys.executable, "-m", "spright", "run", app_ref, *(("--port", str(port)) if port is not None else ()),
               *(("--transport", *transport.split()) if transport is not None else ()), *args]
    environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    base = Path(environment["SPRIGHT_RUNTIME_DIR"]) if environment.get("SPRIGHT_RUNTIME_DIR") else runtime_base()
    own_log = log is None
    if log is None:
        log = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: a chatty node never blocks on it
    process = subprocess.Popen(command, stderr=log, env=environment)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:  # it writes node.json once it serves
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"node exited early:\n{log.read().decode(errors='replace')}")
            with contextlib.suppress(OSError, BadNodeFile):
                nodes = [NodeFile.read(path) for path in base.glob("*/node.json")]
                ours = [node for node in nodes if node.pid == process.pid]
                if ours:
                    port = ours[0].port
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {app_ref} did not serve within {startup_timeout}s")
            time.sleep(0.1)
        yield port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if own_log:
            log.close()
