"""The ingress of the paper's Knative in front of every hop of the http data plane (``--ingress``).

In the SPRIGHT paper's Knative setup every hop, the first from the client and every one
between functions, goes through the cluster's ingress (Istio's Envoy) and then the callee's
queue-proxy. With ``spright run --transport http --sidecar --ingress`` one nginx process per
node plays that ingress: every sender (the gateway and every worker) POSTs each hop to the
ingress's port with ``Host: e<endpoint>.spright``, and nginx proxies it to that endpoint's
queue-proxy (the sidecar; the gateway has none, so to its own port) over keep-alive
connections, as Envoy keeps its upstream connections. nginx (and HAProxy) are faster than
Envoy: the baseline stays on the generous side of what the paper measured.

The ingress routes to an endpoint, not to a function: the sender already picked the
instance (``Domains.split``), where Knative's ingress would route to a service and let the
activator or the service's load balancing pick the pod.

nginx serves one connection's requests one at a time (as Envoy does HTTP/1.1): a sender's
hops to one destination wait for each other's 204, which keeps them in order, as the data
plane's contract asks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGE = "nginx-light"  # Debian's smallest nginx with the proxy and stub_status modules
STATUS_HOST = "ingress.spright"  # GET /status with this Host: nginx's stub_status (its request counter)
# A sender's connection lives as long as the node: nginx must never close it for being idle or old,
# or the hops written on it meanwhile would be lost.
_FOREVER = "keepalive_timeout 1d; keepalive_requests 1000000000;"


def nginx_binary() -> str | None:
    """nginx's path: on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def unavailable_reason() -> str | None:
    """None when nginx is installed, else what to install."""
    if nginx_binary() is None:
        return (f"--ingress runs nginx, which is not installed: apt-get install {PACKAGE} "
                f"(or nginx), or `make setup` as root")
    return None


def host_of(endpoint: int) -> str:
    """The Host header that routes a hop to ``endpoint`` through the ingress."""
    return f"e{endpoint}.spright"


def render(directory: Path, port: int, upstreams: dict[int, int]) -> str:
    """nginx.conf: one process, everything in ``directory``, loopback only, a server per endpoint."""
    lines = [
        "daemon off;",  # the supervisor's child, stopped by it
        "master_process off;",  # one process: what one Envoy thread would do, on a 2-core machine
        f"pid {directory / 'nginx.pid'};",
        f"error_log {directory / 'error.log'} error;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        "    server_tokens off;",
        # nginx's compiled-in temporary directories are under /var/lib/nginx: keep every file in ours
        *(f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "    client_max_body_size 0;",  # the gateway already bounds a body (Config.max_body)
        "    client_body_buffer_size 1m;",  # a body's chunks on their way: Envoy's default buffer limit
        f"    {_FOREVER}",
        "    proxy_http_version 1.1;",  # keep-alive to the queue-proxies...
        '    proxy_set_header Connection "";',  # ...which HTTP/1.0's "close" would forbid
        "    proxy_request_buffering off;",  # stream a hop's body on, as Envoy does (no temporary files)
        "    proxy_next_upstream off;",  # a hop reaches its endpoint at most once
        f"    server {{ listen 127.0.0.1:{port} default_server; return 421; }}",  # a Host nobody serves
        f"    server {{ listen 127.0.0.1:{port}; server_name {STATUS_HOST}; location = /status {{ stub_status; }} }}",
    ]
    for endpoint, upstream in sorted(upstreams.items()):
        name = f"e{endpoint}"
        lines += [
            f"    upstream {name} {{ server 127.0.0.1:{upstream} max_fails=0; keepalive 64; {_FOREVER} }}",
            f"    server {{ listen 127.0.0.1:{port}; server_name {host_of(endpoint)}; "
            f"location / {{ proxy_pass http://{name}; }} }}",
        ]
    return "\n".join([*lines, "}", ""])


class Ingress:
    """One nginx serving ``port`` for the node, its files in ``directory`` (removed at stop)."""

    def __init__(self, directory: Path, port: int, upstreams: dict[int, int]) -> None:
        self.directory = directory
        self.port = port
        self.upstreams = upstreams
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """nginx, listening before this returns; a clear error if it is missing or fails."""
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError(unavailable_reason())
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(render(self.directory, self.port, self.upstreams))
        # setpriv (util-linux): nginx gets SIGKILL if the supervisor dies (SIGKILLed, it could not
        # stop nginx); bash's exec -a: nginx says what it is in ps, as the node's other processes do
        guard = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        title = f"spright: ingress nginx :{self.port}"
        # -e: the log nginx opens before it reads the configuration (Debian's default: stderr)
        self.process = subprocess.Popen([*guard, "bash", "-c", 'exec -a "$0" "$@"', title, binary,
                                         "-p", str(self.directory), "-c", str(conf),
                                         "-e", str(self.directory / "error.log")],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the ingress (nginx) exited at startup: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ingress (nginx) did not listen on port {self.port} within {timeout:.0f}s")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        try:
            return " ".join((self.directory / "error.log").read_text().strip().splitlines()[-3:])
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        """nginx stops (SIGTERM: at once, then SIGKILL after 5 s) and its directory goes."""
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
