"""Kubernetes pod mode: one spright node per pod replica.

The pod is the node: a ``gateway`` container and one container per process group share the
pool (/dev/shm, a memory-backed emptyDir), the node directory (/run/spright) and, on the
skmsg data plane, the host's bpffs, so a request crosses the pod's containers with no copy,
as it crosses processes under ``spright run``. Replicas are whole nodes behind one Service,
scaled by an HPA on the gateways' requests in flight.
"""

from __future__ import annotations

import math
from typing import Any

from spright.data.autoscale import TARGET_UTILISATION
from spright.host.nodefile import NODE_DIR_ENV
from spright.ops.deploy.plan import (
    BPF_FS,
    GATEWAY_BASE_MEMORY_MI,
    GATEWAY_CPU,
    NODE_DIR,
    PORT,
    SHM_DIR,
    WORKER_CPU_MILLI,
    WORKER_MEMORY_MI,
    Target,
    command_line,
    labels,
    mebibytes,
    metrics_builtin,
    pools,
    selector,
    shm_mib,
    unique_labels,
)
from spright.worker import peertls

TLS_DIR = "/etc/spright/tls"  # --tls-secret: a kubernetes.io/tls Secret with ca.crt (cert-manager's keys)
TLS_FILES = {peertls.CERT_ENV: "tls.crt", peertls.KEY_ENV: "tls.key", peertls.CA_ENV: "ca.crt"}
IN_FLIGHT_METRIC = "spright_requests_in_flight"  # the gateway's gauge (spright/front/gateway.py metrics_page)
POD_UID_ENV = "POD_UID"  # names this pod's own directory in the host's bpffs
BPF_SUBDIR = f"spright-pod-$({POD_UID_ENV})"

# Capability -> why it is added, on the skmsg data plane (the header of deployment.yaml and
# docs/deploy.md say the same); every other capability is dropped.
GATEWAY_CAPS = {
    "BPF": "bpf(2): load the sk_msg program, create and pin its maps",
    "NET_ADMIN": "socket maps (SOCKMAP/SOCKHASH) and attaching the sk_msg verdict to them",
    "PERFMON": "what the verifier and bcc gate on CAP_PERFMON (pointer reads, perf buffers)",
    "SYS_ADMIN": "bcc's kallsyms/perf use, and bpf(2) on kernels < 5.8 (no CAP_BPF); "
                 "spright's skmsg probe requires it",
}
WORKERS_UNPRIVILEGED = ("each worker: none, runs as uid 65532, and no bpffs: it hands its socket to the gateway, "
                        "which puts it into the sockhash (spright/transport/skmsg_register.py)")
GATEWAY_GROUP = ("the gateway runs as root with the workers' group 65532 (fsGroup) among its groups: it hands them "
                 "the node's files (--workers-group), 0660 to that group and to nobody else")
GATEWAY_ESCALATION = ("the gateway does not set allowPrivilegeEscalation: false: privilege escalation stays "
                      "possible with SYS_ADMIN, and the API server refuses that pair")
WORKER_UID = 65532  # every worker container's user (and the whole pod's where the gateway needs no root)
TLS_GROUP = WORKER_UID  # the Secret's files are group-readable to it (fsGroup), not to everyone
HPA_METRIC_NOTE = (f"{IN_FLIGHT_METRIC} (a Pods metric) is a custom metric: it needs Prometheus scraping "
                   "the pods and prometheus-adapter serving it through the custom metrics API")


def dockerfile(target: Target, out_dir: str) -> str:
    """The image every mode runs: Debian's python3 (bcc is built for it), a venv with the
    project installed and Debian's bcc visible through a .pth shim, spright as entrypoint."""
    extras = "apps" if target.reference.startswith("apps.") else ""
    return f"""\
# syntax=docker/dockerfile:1
# Written by `spright deploy`. The build context is the project root (the directory holding
# pyproject.toml), which is copied into the image: build it from there with
#     docker build -f {out_dir}/Dockerfile -t {target.image} .
# (or podman/buildah: `podman build -f {out_dir}/Dockerfile -t {target.image} .`).
# Network is needed at build time only (apt, PyPI); the image runs without it.
FROM debian:bookworm-slim

# pip extras of the project (the demo apps need "apps"); more Debian packages (parking: tesseract-ocr)
ARG EXTRAS="{extras}"
ARG APT_EXTRA=""

# bcc (python3-bpfcc, libbpfcc) compiles the sk_msg program against kernel headers at start-up;
# bpftool inspects the pinned maps. The skmsg manifests mount the host's /lib/modules and /usr/src
# over the image's; Debian's linux-headers-amd64 serve a host without headers of its own when the
# container runs without those mounts, once ebpf/setup-headers.sh has linked them (docs/deploy.md).
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      python3 python3-venv python3-bpfcc libbpfcc bpftool linux-headers-amd64 $APT_EXTRA \\
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/spright
COPY . .

# The venv is made from Debian's python3 (what bcc is built for; PGO+LTO) and sees Debian's bcc,
# never PyPI's unrelated `bcc`, through a one-package shim, as the Makefile's .venv/.installed does.
ENV VENV=/opt/spright
RUN python3 -m venv "$VENV" \\
 && "$VENV/bin/pip" install --no-cache-dir ".${{EXTRAS:+[$EXTRAS]}}" \\
 && test -d /usr/lib/python3/dist-packages/bcc \\
 && mkdir -p "$VENV/debian-bcc" \\
 && ln -sfn /usr/lib/python3/dist-packages/bcc "$VENV/debian-bcc/bcc" \\
 && purelib="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \\
 && echo "$VENV/debian-bcc" > "$purelib/debian-bcc.pth" \\
 && "$VENV/bin/python" -c "import spright, bcc"

ENV PATH="/opt/spright/bin:$PATH" PYTHONUNBUFFERED=1
EXPOSE {PORT}
ENTRYPOINT ["/opt/spright/bin/spright"]
"""


DOCKERIGNORE = """\
# BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile; copy it to the project root
# as .dockerignore for builders that only read that one.
.git
.venv
**/__pycache__
*.egg-info
.pytest_cache
.ruff_cache
.mypy_cache
.hypothesis
tests/artifacts
build
"""


def tls_users(target: Target) -> set[str]:
    """The process groups whose worker calls other nodes: they get the node's certificate."""
    from spright.worker.remote import remote_urls  # (httptools: `spright deploy` only, not every command)

    remote = {name for name, _ in remote_urls(target.app.functions)}
    return {group for group, ids in target.table.processes().items()
            if any(target.table.functions[i - 1].name in remote for i in ids)}


def _with_tls(container: dict[str, Any]) -> dict[str, Any]:
    """``container`` with the node's certificate, key and CA (--tls-secret) mounted and named
    where spright reads them (spright.worker.peertls)."""
    container["env"] += [{"name": name, "value": f"{TLS_DIR}/{file}"} for name, file in TLS_FILES.items()]
    container["volumeMounts"].append({"name": "peer-tls", "mountPath": TLS_DIR, "readOnly": True})
    return container


def deployment(target: Target, transport: str, replicas: int, tls_secret: str | None = None) -> dict[str, Any]:
    """``tls_secret``: hops to and from other nodes over mutual TLS, with that Secret's files."""
    skmsg = transport == "skmsg"
    table, config = target.table, target.app.config
    shm = shm_mib(config, pools(table))
    groups = table.processes()
    names = unique_labels(groups, prefix="worker-", taken={"gateway"})
    # Every container gets objects of its own (_shared_mounts(), _env()): an object written twice
    # would come out of the YAML dumper as an anchor and aliases, which nobody reads easily.
    gateway: dict[str, Any] = {
        "name": "gateway",
        "image": target.image,
        # on skmsg the gateway is root: it hands the workers (WORKER_UID, not root) the node's files
        "args": command_line("gateway", target.reference, transport=transport, node_dir=NODE_DIR)[1:]
        + (["--workers-group", str(WORKER_UID)] if skmsg else []),
        "ports": [{"name": "http", "containerPort": PORT}],
        **_env(skmsg),
        "volumeMounts": [*_shared_mounts(skmsg), *(
            [{"name": "modules", "mountPath": "/lib/modules", "readOnly": True},
             {"name": "src", "mountPath": "/usr/src", "readOnly": True}] if skmsg else [])],
        "resources": {"requests": {"cpu": GATEWAY_CPU, "memory": mebibytes(GATEWAY_BASE_MEMORY_MI + shm)}},
        "securityContext": _gateway_security(skmsg),
        **_probes(target, config.ready_timeout, tls=tls_secret is not None),
    }
    if tls_secret:
        _with_tls(gateway)
    workers = []
    for group, ids in groups.items():  # a container per worker process: each instance its own
        instances = table.functions[ids[0] - 1].instances if len(ids) == 1 else 1
        for instance in range(instances):
            worker = {
                "name": names[group] + (f"-{instance}" if instances > 1 else ""),
                "image": target.image,
                "args": command_line("worker", target.reference, transport=transport, node_dir=NODE_DIR,
                                     group=group, instance=instance)[1:],
                **_env(skmsg=False),
                "volumeMounts": _shared_mounts(skmsg=False),
                "resources": {"requests": {"cpu": f"{WORKER_CPU_MILLI}m", "memory": mebibytes(WORKER_MEMORY_MI)}},
                "securityContext": _worker_security(),
            }
            workers.append(_with_tls(worker) if tls_secret and group in tls_users(target) else worker)
    pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if not skmsg:  # nothing needs root: the pod meets the "restricted" Pod Security Standard
        pod_security.update(runAsNonRoot=True, runAsUser=WORKER_UID, runAsGroup=WORKER_UID)
    if tls_secret or skmsg:  # skmsg: the root gateway gets the workers' group, to hand them its files
        pod_security["fsGroup"] = TLS_GROUP
    template_meta: dict[str, Any] = {"labels": labels(target.name, "node")}
    if metrics_builtin(table):
        template_meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                                        "prometheus.io/path": "/metrics"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": target.meta(target.name, "node"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(target.name)},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": math.ceil(config.drain_timeout) + 5,
                    "securityContext": pod_security,
                    "containers": [gateway, *workers],
                    "volumes": [volume for volume, _ in _volumes(target, skmsg, tls_secret)],
                },
            },
        },
    }


def _volumes(target: Target, skmsg: bool, tls_secret: str | None = None) -> list[tuple[dict[str, Any], str]]:
    """The pod's volumes, each with what it is (for the header of deployment.yaml)."""
    table, config = target.table, target.app.config
    shm = shm_mib(config, pools(table))
    volumes = [
        ({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": mebibytes(shm)}},
         f"{SHM_DIR} in every container, memory-backed: the pools ({pools(table)}, one per security domain) "
         "x sum(size*count) of the pool's classes, x1.25"),
        ({"name": "node", "emptyDir": {"medium": "Memory"}},
         f"{NODE_DIR} in every container: the node directory (node.json, sockets)"),
    ]
    if skmsg:
        volumes += [
            ({"name": "bpffs", "hostPath": {"path": BPF_FS, "type": "Directory"}},
             f"the host's {BPF_FS} in the gateway: pinned maps; each pod pins under its own "
             f"subdirectory {BPF_SUBDIR} (subPathExpr)"),
            ({"name": "modules", "hostPath": {"path": "/lib/modules", "type": "Directory"}},
             "the host's /lib/modules, read-only in the gateway: bcc compiles against the host kernel's headers"),
            ({"name": "src", "hostPath": {"path": "/usr/src", "type": "Directory"}},
             "the host's /usr/src, read-only in the gateway: where those headers live"),
        ]
    if tls_secret:
        users = ", ".join(sorted(tls_users(target))) or "none"
        volumes.append((
            {"name": "peer-tls", "secret": {"secretName": tls_secret, "defaultMode": 0o440}},
            f"Secret {tls_secret} at {TLS_DIR}, read-only, in the gateway and the workers calling other nodes "
            f"({users}): this node's certificate and key and the nodes' CA, for mutual TLS between nodes; "
            f"its files 0440, group {TLS_GROUP} (fsGroup)"))
    return volumes


def _shared_mounts(skmsg: bool) -> list[dict[str, Any]]:
    """The volumes a container of the pod mounts (a new list each call): the bpffs is the
    gateway's only (``skmsg``)."""
    mounts: list[dict[str, Any]] = [{"name": "shm", "mountPath": SHM_DIR}, {"name": "node", "mountPath": NODE_DIR}]
    if skmsg:
        mounts.append({"name": "bpffs", "mountPath": BPF_FS, "subPathExpr": BPF_SUBDIR})
    return mounts


def _env(skmsg: bool) -> dict[str, Any]:
    """A container's ``env`` entry (a new one each call): where the node directory is (``spright
    stats`` in any container finds the node there) and, on skmsg, the pod's UID, which names its
    bpffs subdirectory."""
    env: list[dict[str, Any]] = [{"name": NODE_DIR_ENV, "value": NODE_DIR}]
    if skmsg:
        env.append({"name": POD_UID_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}})
    return {"env": env}


def deployment_notes(target: Target, transport: str, tls_secret: str | None = None) -> list[str]:
    """What deployment.yaml's header comment says: each added capability and each volume, and why."""
    lines = []
    if transport == "skmsg":
        lines.append("Capabilities added on the skmsg data plane (every container drops ALL others):")
        lines += [f"  gateway {cap}: {why}" for cap, why in GATEWAY_CAPS.items()]
        lines.append(f"  {WORKERS_UNPRIVILEGED}")
        lines.append(f"  {GATEWAY_GROUP}")
        lines.append(f"  Note: {GATEWAY_ESCALATION}.")
        lines.append("  The host paths and capabilities need a namespace whose Pod Security level is privileged.")
    else:
        lines.append(f"Capabilities: none added on the {transport} data plane (every container drops ALL, "
                     "runs as uid 65532 without privilege escalation).")
    lines.append("Volumes:")
    lines += [f"  {volume['name']}: {why}" for volume, why in _volumes(target, transport == "skmsg", tls_secret)]
    return lines


def _gateway_security(skmsg: bool) -> dict[str, Any]:
    if not skmsg:
        return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    # no allowPrivilegeEscalation: false here: a process holding CAP_SYS_ADMIN can escalate
    # anyway, and the API server refuses that combination (GATEWAY_ESCALATION)
    return {"capabilities": {"drop": ["ALL"], "add": list(GATEWAY_CAPS)}}


def _worker_security() -> dict[str, Any]:
    """A worker container: no capability, no escalation, and not root (as `spright run`'s workers
    drop to --user), on every data plane. On skmsg the gateway is root: it hands what it shares
    through the node directory and /dev/shm (join.json, its sockets, the pools and their locks,
    the counters) to the workers' group (``--workers-group``; it is among the gateway's groups
    as the pod's fsGroup), 0660, and to nobody else."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID}


def _probes(target: Target, ready_timeout: float, tls: bool = False) -> dict[str, Any]:
    """The gateway serves no health page: TCP on the port for start-up and readiness; liveness
    asks for its built-in /metrics (a page the gateway process renders itself) when it has one,
    and its port is not mutual TLS (the kubelet has no client certificate)."""
    def tcp() -> dict[str, Any]:  # a new one per probe (no YAML aliases)
        return {"tcpSocket": {"port": PORT}}

    from spright.worker.remote import exposes  # (httptools: `spright deploy` only, not every command)

    page = metrics_builtin(target.table) and not (tls and exposes(target.table))
    live = {"httpGet": {"path": "/metrics", "port": PORT}} if page else tcp()
    return {
        "startupProbe": {**tcp(), "periodSeconds": 2, "failureThreshold": max(math.ceil(ready_timeout / 2), 1)},
        "readinessProbe": {**tcp(), "periodSeconds": 5},
        "livenessProbe": {**live, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    }


def service(target: Target) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": target.meta(target.name, "node"),
        "spec": {
            "selector": selector(target.name),
            "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}],
        },
    }


def in_flight_target(target: Target) -> int:
    """Requests in flight per pod the HPA aims at: Knative's 70% of what the narrowest entry
    function (first hop of a route) runs at once."""
    table = target.table
    entries = {hops[0] for hops in table.chains if hops and hops[0] != 0}
    capacities = [table.functions[i - 1].concurrency * table.functions[i - 1].instances for i in entries]
    return max(round(TARGET_UTILISATION * min(capacities, default=1)), 1)


def hpa(target: Target, replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": target.meta(target.name, "node"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.name},
            "minReplicas": replicas,
            "maxReplicas": max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {  # HPA_METRIC_NOTE
                    "metric": {"name": IN_FLIGHT_METRIC},
                    "target": {"type": "AverageValue", "averageValue": str(in_flight_target(target))},
                },
            }],
        },
    }
