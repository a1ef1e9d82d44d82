"""Knative mode: a Knative Service per function on the ``http`` data plane, and an ingress.

Each function runs as its own autoscaled service (Knative's KPA, per function), serving its
handler over HTTP; every other function is a remote it reaches by URL (SPRIGHT_REMOTES). The
``<app>-ingress`` service holds the routes and reaches every function remotely. Every hop is an
HTTP request carrying its payload: a copy per hop, where a pod or a node passes descriptors.
"""

from __future__ import annotations

import math
from typing import Any

from spright.data.autoscale import TARGET_UTILISATION
from spright.ops.deploy.plan import (
    GATEWAY_BASE_MEMORY_MI,
    KNATIVE_CPU,
    KNATIVE_NAME_MAX,
    PORT,
    REMOTES_ENV,
    SHM_DIR,
    Target,
    command_line,
    dns_label,
    max_timeout,
    mebibytes,
    pools,
    remotes,
    shm_mib,
    unique_labels,
)

API_VERSION = "serving.knative.dev/v1"
INGRESS_TARGET = 100  # Knative's own default concurrency target, for the ingress gateways
MAX_CONTAINER_CONCURRENCY = 1000  # Knative's default container-concurrency-max-limit
MAX_TIMEOUT_SECONDS = 600  # Knative's default max-revision-timeout-seconds
KPA = "kpa.autoscaling.knative.dev"
CLUSTER_LOCAL = {"networking.knative.dev/visibility": "cluster-local"}
# The header comment of knative.yaml: what each service adds and mounts, and why.
NOTES = (
    "Capabilities: none added (every container drops ALL, runs as uid 65532 without privilege escalation).",
    "Volumes:",
    f"  shm: {SHM_DIR}, memory-backed: the payload pool (the ingress: one per security domain; a function: "
    "its domain's). It needs Knative's kubernetes.podspec-volumes-emptydir feature (config-features ConfigMap).",
    "Function services are cluster-local; only the ingress is public.",
)


def service_names(target: Target) -> tuple[str, dict[str, str]]:
    """The ingress service's name, and function name -> its service's name."""
    ingress = dns_label(f"{target.name}-ingress", KNATIVE_NAME_MAX)
    functions = unique_labels(target.app.functions, prefix=f"{target.name}-", limit=KNATIVE_NAME_MAX,
                              taken={ingress})
    return ingress, functions


def service_urls(target: Target) -> dict[str, str]:
    """Function name -> the cluster-local URL of its Knative service."""
    _, names = service_names(target)
    return {function: f"http://{name}.{target.namespace}.svc.cluster.local" for function, name in names.items()}


def scale(target: Target, function: str) -> dict[str, int]:
    """min-scale, max-scale and target (requests in flight per instance) of one function, from
    what the app declares: its ScalePolicy, else its instances; a stateful function runs as one."""
    declared = target.app.functions[function]
    entry = target.table.functions[target.table.function_id(function) - 1]
    most = target.table.max_instances(entry.id)
    if declared.autoscale is not None:
        policy = declared.autoscale
        low, high, aim = policy.min_instances, most, policy.target
    else:
        low, high, aim = entry.instances, most, TARGET_UTILISATION * entry.concurrency
    if declared.stateful:
        low = high = 1
    return {"min": max(low, 1), "max": high, "target": max(round(aim), 1)}


def services(target: Target) -> list[dict[str, Any]]:
    """The ingress, then one service per function in registration order."""
    ingress_name, names = service_names(target)
    urls = service_urls(target)
    config = target.app.config
    timeout = min(math.ceil(max_timeout(target.table, config)), MAX_TIMEOUT_SECONDS)
    ingress = _service(
        target, ingress_name, "ingress",
        args=command_line("node", target.reference, transport="http")[1:],
        remotes_json=remotes(urls),
        annotations={"autoscaling.knative.dev/target": str(INGRESS_TARGET),
                     "autoscaling.knative.dev/min-scale": "1"},
        shm=shm_mib(config, pools(target.table)), concurrency=0, timeout=timeout, public=True,
    )
    out = [ingress]
    for function in target.app.functions:
        sizes = scale(target, function)
        out.append(_service(
            target, names[function], "function",
            args=command_line("node", target.reference, transport="http")[1:],
            remotes_json=remotes(urls, exclude=function),
            annotations={"autoscaling.knative.dev/target": str(sizes["target"]),
                         "autoscaling.knative.dev/min-scale": str(sizes["min"]),
                         "autoscaling.knative.dev/max-scale": str(sizes["max"])},
            shm=shm_mib(config, 1),
            concurrency=min(target.app.functions[function].concurrency, MAX_CONTAINER_CONCURRENCY),
            timeout=timeout, public=False, function=function,
        ))
    return out


def _service(target: Target, name: str, component: str, *, args: list[str], remotes_json: str,
             annotations: dict[str, str], shm: int, concurrency: int, timeout: int, public: bool,
             function: str | None = None) -> dict[str, Any]:
    meta = target.meta(name, component)
    if not public:  # functions are reached by the ingress and each other only
        meta["labels"] = {**meta["labels"], **CLUSTER_LOCAL}
    if function is not None:
        meta["annotations"] = {"spright/function": function}
    container = {
        "name": "spright",
        "image": target.image,
        "args": args,
        "ports": [{"name": "http1", "containerPort": PORT}],
        "env": [{"name": REMOTES_ENV, "value": remotes_json}],
        "resources": {"requests": {"cpu": KNATIVE_CPU, "memory": mebibytes(GATEWAY_BASE_MEMORY_MI + shm)}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
        "volumeMounts": [{"name": "shm", "mountPath": SHM_DIR}],
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"autoscaling.knative.dev/class": KPA,
                                    "autoscaling.knative.dev/metric": "concurrency", **annotations},
                },
                "spec": {
                    "containerConcurrency": concurrency,
                    "timeoutSeconds": timeout,
                    "containers": [container],
                    "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": mebibytes(shm)}}],
                },
            },
        },
    }
