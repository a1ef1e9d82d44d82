"""What every deployment mode shares: the command lines, names, sizes and constants.

``command_line`` is the one place that writes how a container starts spright: the manifests
of every mode take their ``args`` from it, so a change of the roles' CLI is a change here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spright.data.config import Config, MiB
from spright.data.table import RouteTable
from spright.routing import App

PORT = 8080  # the gateway's HTTP port in every container
NODE_DIR = "/run/spright"  # the node's runtime directory, shared by a pod's containers
SHM_DIR = "/dev/shm"  # the payload pools (POSIX shared memory)
BPF_FS = "/sys/fs/bpf"  # where the skmsg gateway pins the data plane's maps
SHM_HEADROOM = 1.25  # /dev/shm holds the pools plus the counter table and some slack
REMOTES_ENV = "SPRIGHT_REMOTES"  # JSON {function name: base URL} for the http data plane

# Resource requests, in one place: a starting point to tune, not a measurement.
GATEWAY_CPU = "250m"
GATEWAY_BASE_MEMORY_MI = 128  # the gateway process; the pool's /dev/shm figure is added to it
WORKER_CPU_MILLI = 100  # per instance the process group starts with
WORKER_MEMORY_MI = 128  # per instance
KNATIVE_CPU = "250m"  # one Knative function node (its process plus its domain's pool)

KNATIVE_NAME_MAX = 49  # Knative appends "-00001" to a revision and "-private" to its Service
DNS_LABEL_MAX = 63
TRANSPORTS_K8S = ("skmsg", "unix")
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

Role = Literal["gateway", "worker", "node"]


def command_line(role: Role, reference: str, *, transport: str, node_dir: str | None = None,
                 group: str | None = None, instance: int = 0) -> list[str]:
    """The command a container runs, ``spright`` first (the image's entrypoint: the manifests'
    ``args`` are the rest). ``gateway``: a pod's gateway, serving HTTP on PORT, whose workers
    are other containers joining through ``node_dir``; ``worker``: instance ``instance`` of the
    process group ``group`` of that node; ``node``: a whole node in one container (Knative: its
    SPRIGHT_REMOTES says which functions the other services serve)."""
    if role == "node":
        return ["spright", "run", reference, "--host", "0.0.0.0", "--port", str(PORT), "--transport", transport]
    if node_dir is None:
        raise ValueError("a pod's gateway and workers need the node directory")
    if role == "gateway":
        return ["spright", "gateway", reference, "--node-dir", node_dir, "--host", "0.0.0.0", "--port", str(PORT),
                "--transport", transport]
    if group is None:
        raise ValueError("a worker needs its process group")
    line = ["spright", "worker", reference, group, "--node-dir", node_dir]
    return [*line, "--instance", str(instance)] if instance else line


def remotes(urls: Mapping[str, str], exclude: str | None = None) -> str:
    """SPRIGHT_REMOTES: every function but ``exclude``, name -> URL, in registration order."""
    return json.dumps({name: url for name, url in urls.items() if name != exclude}, separators=(",", ":"))


def dns_label(text: str, limit: int = DNS_LABEL_MAX) -> str:
    """``text`` as an RFC 1035 label (lower case, digits, '-', a letter first), at most ``limit``
    characters; a shortened one ends in a hash of ``text``, so different texts stay apart."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-").lstrip("0123456789-") or "x"
    if len(label) > limit:
        label = f"{label[: limit - 9].rstrip('-')}-{_digest(text)}"
    return label


def is_dns_label(text: str, limit: int = DNS_LABEL_MAX) -> bool:
    return len(text) <= limit and _DNS_LABEL.fullmatch(text) is not None


def unique_labels(texts: Iterable[str], *, prefix: str = "", limit: int = DNS_LABEL_MAX,
                  taken: Iterable[str] = ()) -> dict[str, str]:
    """text -> ``prefix`` + its label, distinct from each other and from ``taken``: two texts
    that map to one label (``a_b``, ``a-b``) each get a hash of their own."""
    used = set(taken)
    out: dict[str, str] = {}
    for text in texts:
        name = dns_label(prefix + text, limit)
        if name in used:
            name = f"{dns_label(prefix + text, limit - 9)}-{_digest(text)}"
        if name in used:
            raise ValueError(f"cannot give {text!r} a distinct name (tried {name!r})")
        used.add(name)
        out[text] = name
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def pools(table: RouteTable) -> int:
    """Pools the node creates: one per security domain of its functions (the gateway's has none)."""
    return len({f.domain for f in table.functions})


def shm_mib(config: Config, pool_count: int) -> int:
    """MiB of /dev/shm for ``pool_count`` pools of ``config.pool``'s shape, with headroom."""
    per_pool = sum(size * count for size, count in config.pool.size_classes())
    return math.ceil(per_pool * pool_count * SHM_HEADROOM / MiB)


def mebibytes(count: int) -> str:
    return f"{count}Mi"


def labels(app_name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": app_name,
        "app.kubernetes.io/instance": app_name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": app_name,
        "app.kubernetes.io/managed-by": "spright",
    }


def selector(app_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app_name, "app.kubernetes.io/instance": app_name}


def metrics_builtin(table: RouteTable) -> bool:
    """The gateway serves its own GET /metrics (the app does not route that path itself)."""
    return any(route.builtin == "metrics" for route in table.routes)


def max_timeout(table: RouteTable, config: Config) -> float:
    return max((*table.timeouts, config.default_timeout))


@dataclass(frozen=True)
class Target:
    """What the manifests deploy: the app, its compiled table, how the image names it."""

    app: App
    table: RouteTable
    reference: str  # MODULE:APP, as a container imports it (its working directory is the project)
    image: str
    namespace: str

    @property
    def name(self) -> str:
        return dns_label(self.app.name, 40)  # room for suffixes such as "-ingress"

    def meta(self, name: str, component: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": labels(self.name, component), **extra}
