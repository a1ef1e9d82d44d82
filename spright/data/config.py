"""Every setting of a node in one object.

``App(...)`` sets the app's own (the pool, the default route timeout); ``spright run``'s
options set where and how it serves (``App.config.replace(host=..., port=...)``); the
supervisor, the gateway, the HTTP server, the workers and ``TestClient`` read this object
and nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from dataclasses import dataclass, field
from typing import Any

MiB = 1 << 20
BALANCES = ("least_in_flight", "round_robin")  # how an instance is picked (spright run --balance)
WORKER_STARTS = ("fork", "spawn")  # how a worker process starts (spright run --worker-start)


@dataclass(frozen=True)
class PoolConfig:
    """Slot sizes and counts. The largest class holds the larger limit plus ``meta_reserve`` of metadata."""

    max_body: int = 8 * MiB  # the largest request body: past it the gateway answers 413
    # the largest result a handler may return (a hop's output, a call's answer, the response),
    # past which it is answered 500 saying so. None: whatever the largest slot holds beside the
    # request's metadata (max_body and a little more, as ever). Set it to answer more than a
    # request may send without raising max_body, or to cap answers exactly.
    max_response: int | None = None
    classes: tuple[tuple[int, int], ...] = ((4096, 4096), (65536, 1024), (MiB + 65536, 64))
    large_slots: int = 8
    meta_reserve: int = 64 * 1024

    def size_classes(self) -> list[tuple[int, int]]:
        large = max(self.max_body, self.max_response or 0) + self.meta_reserve
        small = [(size, count) for size, count in self.classes if size < large]
        return [*small, (large, self.large_slots)]


@dataclass(frozen=True)
class Config:
    # -- serving (spright run's options) ---------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    transport: str = "auto"  # auto, or a name from spright.transport.registry()
    poll_idle_us: int | None = None  # poll data plane: None spins for ever; N sleeps after N µs idle
    sidecar: bool = False  # http data plane: a queue-proxy-like process in front of each function
    sidecar_concurrency: int = 0  # requests a sidecar lets reach its function at once (0: no limit)
    ingress: bool = False  # http --sidecar: every hop first through one nginx (the paper's Knative ingress)
    # --ingress: connections a sender opens to it per destination; past 1, a sender's hops to one
    # destination keep their order per request only (spright/transport/http.py says why)
    ingress_connections: int = 1
    instances: tuple[tuple[str, int], ...] = ()  # (function, instances to start with) over the app's own
    gateways: int | None = None  # gateway processes on the port (SO_REUSEPORT); None: by cores
    balance: str = "least_in_flight"  # how a function's instance is picked: or round_robin
    node_dir: str | None = None  # spright gateway (pod mode): where its workers, started on their own, join
    # spright gateway --workers-group (pod mode, a gateway that is root: skmsg's): the gid its workers'
    # containers run as; the node's files they open become that group's, and nobody else's (join.hand_over)
    workers_group: int | None = None
    # fork: each worker forks from the node's template process, the app already imported
    # (spright.node.template); spawn: each is a fresh interpreter (for apps not safe to fork)
    worker_start: str = "fork"
    # development (spright run --reload): watch the app's source files and reload the functions
    # whose code changed (spright.node.watch); not for a node whose workers start on their own
    reload: bool = False
    # -- TLS between nodes (docs/deploy.md, "TLS between nodes") ---------------------------
    # PEM files: this node's certificate and key, and the CA that signed every node's. With
    # them, a node exposing functions serves HTTPS requiring a client certificate the CA signed
    # (every client of that node), and remote hops go to https:// peers presenting one.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # the explicit opt-in to plaintext hops: http:// peers with TLS files given (refused
    # otherwise), and no warning that hops are plaintext without them
    insecure_peers: bool = False
    # the user every worker runs as once sealed (spright run --user): None, the dedicated system
    # user ``spright`` when it exists (make setup creates it), else ``nobody``; "root" keeps root
    # (not recommended: a compromised handler is then root on the host)
    user: str | None = None
    # -- the app's (App(...)) ----------------------------------------------------------------
    # tracing (docs/tracing.md): the share of requests traced (a sampled traceparent always is),
    # tail rules that trace every request and keep the slow (seconds) and the failed (5xx) ones,
    # and where kept traces go (an OTLP/HTTP collector's URL; `spright trace` shows them anyway)
    trace_sample: float = 0.0
    trace_slower_than: float | None = None
    trace_errors: bool = False
    otlp: str | None = None
    default_timeout: float = 30.0  # seconds a route's chain may take, unless the route says
    pool: PoolConfig = field(default_factory=PoolConfig)  # pool.max_body, .max_response: the size limits
    # -- HTTP limits -----------------------------------------------------------------------
    max_header_bytes: int = 16 * 1024
    # the largest body of a route whose first function reads it as it arrives (stream_body=True,
    # spright.front.uploads): past it the gateway answers 413 (at once when Content-Length says so,
    # else cutting the upload: its handler is cancelled). None: no limit, since such a body is never
    # held whole (a few parts of it at a time); pool.max_body bounds every other body
    max_stream_body: int | None = None
    max_url: int = 8 * 1024
    keepalive_timeout: float = 15.0
    # a request whose headers or body make no progress for this long is answered 408 and its
    # connection closed (nginx's client_header_timeout and client_body_timeout)
    request_timeout: float = 30.0
    max_connections: int = 10_000  # open client connections; past it a new one is answered 503 and closed
    max_pipelined: int = 64  # requests of one connection in flight; past it the connection is not read
    # admission (Knative queue-proxy's container-concurrency, with its queue being the workers'): requests a
    # gateway process has down its chains at once; past it a new one is answered 503 with
    # Retry-After: 1 at once (keep-alive kept), touching neither the pool nor the data plane.
    # None: ten times the entry functions' concurrency times their most instances (Knative's queue
    # depth), shared among the gateway processes, at most the pool's slots
    # (spright.front.incoming.in_flight_bound)
    max_in_flight: int | None = None
    # lingering close (nginx's lingering_close): after an early answer (413 at the headers, 400...)
    # what the client still sends is read and discarded until it pauses this long or this much
    # time has passed; closing at once would make the kernel reset the connection, and a client
    # still sending its body would never read the answer. nginx's lingering_timeout (5 s): a
    # client starved of CPU for a second (a loaded machine) is still sending, not gone
    linger_pause: float = 5.0
    linger_max: float = 30.0
    # -- the node's clocks -----------------------------------------------------------------
    tick: float = 0.1  # the gateway's housekeeping period: timeouts, sweeps, counters for readers
    grace: float = 10.0  # how long a failed request's slots stay reserved for late writers
    ready_timeout: float = 60.0  # workers must announce themselves within this at startup
    drain_timeout: float = 10.0  # in-flight requests get this long to finish on shutdown

    def __post_init__(self) -> None:
        for name in ("default_timeout", "keepalive_timeout", "request_timeout", "tick", "ready_timeout",
                     "drain_timeout", "linger_pause", "linger_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Config.{name} must be > 0, got {getattr(self, name)!r}")
        if self.poll_idle_us is not None and self.poll_idle_us < 0:
            raise ValueError(f"Config.poll_idle_us must be >= 0, got {self.poll_idle_us}")
        for name in ("max_connections", "max_pipelined", "max_in_flight", "max_stream_body"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.sidecar_concurrency < 0:
            raise ValueError(f"Config.sidecar_concurrency must be >= 0, got {self.sidecar_concurrency}")
        if (self.sidecar or self.sidecar_concurrency) and self.transport != "http":
            raise ValueError(f"--sidecar puts a queue-proxy in front of each function of the http data plane: "
                             f"use it with --transport http, not {self.transport!r}")
        if self.ingress and not (self.sidecar and self.transport == "http"):
            raise ValueError("--ingress puts an ingress (nginx) before every hop's queue-proxy: use it with "
                             f"--transport http --sidecar, not --transport {self.transport}"
                             f"{' --sidecar' if self.sidecar else ' without --sidecar'}")
        if self.ingress_connections < 1 or (self.ingress_connections > 1 and not self.ingress):
            raise ValueError(f"--ingress-connections N (N >= 1) is for --ingress, got {self.ingress_connections}"
                             f"{'' if self.ingress else ' without --ingress'}")
        if not 0 <= self.trace_sample <= 1:
            raise ValueError(f"Config.trace_sample (--trace-sample) is a share of requests, 0..1, "
                             f"got {self.trace_sample}")
        if self.trace_slower_than is not None and not self.trace_slower_than > 0:
            raise ValueError(f"Config.trace_slower_than (--trace-slower-than) is seconds > 0, "
                             f"got {self.trace_slower_than}")
        if self.otlp is not None and not self.otlp.startswith(("http://", "https://")):
            raise ValueError(f"Config.otlp is an OTLP/HTTP collector's URL (http://host:4318/v1/traces), "
                             f"got {self.otlp!r}")
        if self.balance not in BALANCES:
            raise ValueError(f"Config.balance must be one of {', '.join(BALANCES)}, got {self.balance!r}")
        if self.worker_start not in WORKER_STARTS:
            raise ValueError(f"Config.worker_start must be one of {', '.join(WORKER_STARTS)}, "
                             f"got {self.worker_start!r}")
        if self.reload and self.node_dir is not None:
            raise ValueError("--reload is for `spright run` in development: a node whose workers start on their own "
                             "(spright gateway --node-dir) gets new code by restarting its workers' containers")
        given = [name for name in ("tls_cert", "tls_key", "tls_ca") if getattr(self, name)]
        if given and len(given) < 3:
            raise ValueError("TLS between nodes needs --tls-cert, --tls-key and --tls-ca together, got only "
                             + ", ".join("--" + name.replace("_", "-") for name in given))
        if self.user not in (None, "root"):
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise ValueError(f"Config.user (--user) names no user of this machine: {self.user!r}") from None
        if not 0 <= self.port <= 65535:
            raise ValueError(f"Config.port must be 0..65535, got {self.port}")

    @property
    def tracing(self) -> bool:
        """Some request may be traced: the node keeps span rings and a recorder."""
        return bool(self.trace_sample or self.trace_slower_than or self.trace_errors or self.otlp)

    @property
    def tls(self) -> bool:
        """TLS files are given: hops between nodes are mutual TLS."""
        return bool(self.tls_cert)

    @property
    def worker_user(self) -> str | None:
        """Whom the workers of ``spright run`` drop to once sealed: ``user``, else ``spright``
        when that user exists, else ``nobody``; "root": they keep root; None: they stay as they
        started (the node does not run as root, so it has nobody to drop to)."""
        if os.geteuid() != 0:
            return None
        if self.user is not None:
            return self.user
        try:
            pwd.getpwnam("spright")
        except KeyError:
            return "nobody"
        return "spright"

    @property
    def max_body(self) -> int:
        return self.pool.max_body

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes``; ``max_body=N`` resizes the pool's body limit."""
        if "max_body" in changes:
            changes["pool"] = dataclasses.replace(changes.get("pool", self.pool), max_body=changes.pop("max_body"))
        return dataclasses.replace(self, **changes)
