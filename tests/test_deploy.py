"""``spright deploy``: the manifests are valid Kubernetes (checked offline against the API's
schemas with kubernetes-validate), valid Knative as far as Knative's own rules go, and say
what the app declares: its process groups, pools, domains, scaling and statefulness."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from spright import App, PoolConfig
from spright.data.autoscale import ScalePolicy
from spright.data.config import MiB
from spright.node.loader import load_app
from spright.ops.deploy import command_line, deploy_app
from spright.ops.deploy.k8s import GATEWAY_CAPS, GATEWAY_GROUP, WORKERS_UNPRIVILEGED

K8S_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37 ships
APPS = ["apps.online_boutique:app", "apps.motion:app", "apps.parking:app", "examples.echo:app"]
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
KNATIVE_ONLY = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")


async def _handler(ctx: Any) -> bytes:
    return b""


# A small app whose every figure the manifests derive is worked out by hand below.
# Pool per domain: 4096*256 + 65536*16 + (MiB + 64 KiB)*2 = 1 MiB + 1 MiB + 2.125 MiB = 4.125 MiB;
# two domains (public, vault): 8.25 MiB; x1.25 = 10.3125 MiB -> 11Mi.
small = App("Small_App.v2", pool=PoolConfig(max_body=MiB, classes=((4096, 256), (65536, 16)), large_slots=2))
small.add_function(_handler, name="front_door", domain="public")
small.add_function(_handler, name="a.b", process="shared", domain="public")
small.add_function(_handler, name="a_b", process="shared", domain="public")  # same DNS label as a.b
small.add_function(_handler, name="ledger", stateful=True, domain="vault")
small.add_function(_handler, name="resize", autoscale=ScalePolicy(target=5, min_instances=2, max_instances=7),
                   domain="public")
small.add_function(_handler, name="gateway", instances=2, max_instances=3, domain="vault")
small.route("/", ["front_door", "a.b", "a_b"])
small.route("/ledger", ["ledger", "gateway"], methods=["POST"])
small.route("/resize", "resize", methods=["POST"])
SMALL = "tests.test_deploy:small"

# One node of several: a function of its own, exposed, and one another node serves (over mutual TLS).
peers = App("peers")
peers.add_function(_handler, name="local")
peers.remote("far", "https://10.0.0.2:8080")
peers.expose("local")
peers.route("/", ["local", "far"])
plain_peers = App("plain-peers")
plain_peers.remote("far", "http://10.0.0.2:8080")
plain_peers.route("/", "far")
SMALL_SHM = "11Mi"
SMALL_GROUPS = {"front_door", "shared", "ledger", "resize", "gateway"}

runner = CliRunner()


def generate(mode: str, app: str, out: Path, *options: str) -> dict[str, list[dict[str, Any]]]:
    result = runner.invoke(deploy_app, [mode, app, "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    written = {line.removeprefix("wrote ").strip() for line in result.output.splitlines() if line.startswith("wrote ")}
    docs = {}
    for path in sorted(out.iterdir()):
        assert any(shown.endswith(path.name) for shown in written), f"{path.name} written but not reported"
        if path.suffix == ".yaml":
            text = path.read_text()
            assert text.startswith("# Written by `spright deploy "), f"{path.name} starts with its header comment"
            assert not any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)), \
                f"{path.name}: an object written twice came out as a YAML alias"
            docs[path.name] = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    return docs


def header(path: Path) -> str:
    """The comment block a manifest starts with, without its '# '."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").strip())
    return " ".join(lines)


def k8s_validate(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:  # its message prints the whole schema: keep the point
        where = "/".join(str(p) for p in exc.absolute_path)
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {where}: {exc.message}", pytrace=False)


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def caps(container: dict[str, Any]) -> set[str]:
    return set(container["securityContext"]["capabilities"].get("add", []))


# -- Kubernetes pod mode -------------------------------------------------------------------

def test_the_validator_refuses_a_broken_manifest() -> None:
    """Guards the rest: a typo'd field must fail, or passing tests would prove nothing."""
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                                      "spec": {"port": [{"port": 80}]}}, K8S_VERSION, strict=True)


@pytest.mark.parametrize("transport", ["skmsg", "unix"])
@pytest.mark.parametrize("reference", [*APPS, SMALL])
def test_k8s_manifests_are_valid_and_hold_the_node(reference: str, transport: str, tmp_path: Path) -> None:
    docs = generate("k8s", reference, tmp_path, "--transport", transport, "--replicas", "2", "--namespace", "shop")
    assert {"deployment.yaml", "service.yaml", "hpa.yaml"} <= set(docs)
    assert (tmp_path / "Dockerfile").is_file()
    for name, objects in docs.items():
        assert len(objects) == 1, name
        k8s_validate(objects[0])
        assert objects[0]["metadata"]["namespace"] == "shop"
    (deployment,), (service,), (hpa,) = docs["deployment.yaml"], docs["service.yaml"], docs["hpa.yaml"]
    table = load_app(reference).compile()
    pod = deployment["spec"]["template"]["spec"]
    by_name = containers(deployment)
    assert len(by_name) == len(pod["containers"]), "container names must be unique"
    assert all(DNS_LABEL.fullmatch(name) and len(name) <= 63 for name in by_name)

    gateway = by_name.pop("gateway")
    assert gateway["args"] == ["gateway", reference, "--node-dir", "/run/spright", "--host", "0.0.0.0",
                               "--port", "8080", "--transport", transport,
                               *(["--workers-group", "65532"] if transport == "skmsg" else [])]
    groups = {}
    for worker in by_name.values():
        assert worker["args"][:2] == ["worker", reference]
        assert worker["args"][3:5] == ["--node-dir", "/run/spright"] and worker["args"][5:] in ([], ["--instance", "1"])
        groups[worker["args"][2]] = worker
    assert set(groups) == set(table.processes()), "one worker container per process group"

    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    for container in pod["containers"]:
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/dev/shm"] == "shm" and mounts["/run/spright"] == "node"
        assert ("/sys/fs/bpf" in mounts) == (transport == "skmsg" and container is gateway), "the gateway's only"
        assert "drop" in container["securityContext"]["capabilities"]
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    if transport == "skmsg":
        assert volumes["bpffs"]["hostPath"] == {"path": "/sys/fs/bpf", "type": "Directory"}
        gateway_mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
        for path in ("/lib/modules", "/usr/src"):
            assert gateway_mounts[path]["readOnly"] is True
            assert volumes[gateway_mounts[path]["name"]]["hostPath"]["path"] == path
        assert caps(gateway) == set(GATEWAY_CAPS) == {"BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"}
        assert all(not caps(worker) for worker in groups.values()), "the gateway registers their sockets"
        assert all("/lib/modules" not in str(worker["volumeMounts"]) for worker in groups.values())
        # the gateway is root, with the workers' group among its groups: it hands them the node's files
        assert "runAsUser" not in gateway["securityContext"] and "runAsNonRoot" not in pod["securityContext"]
        assert pod["securityContext"]["fsGroup"] == 65532
    else:
        assert set(volumes) == {"shm", "node"}
        assert all(not caps(c) for c in pod["containers"])
        assert all(c["securityContext"]["allowPrivilegeEscalation"] is False for c in pod["containers"])
        assert pod["securityContext"]["runAsNonRoot"] is True
    for worker in groups.values():  # each worker container says so itself, as `spright run`'s drop to --user
        security = worker["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == security["runAsGroup"] == 65532
        assert security["allowPrivilegeEscalation"] is False and not caps(worker)
    for container in pod["containers"]:  # the API server refuses this pair (kubernetes-validate cannot see it)
        added = caps(container)
        if added & {"SYS_ADMIN", "CAP_SYS_ADMIN"}:
            assert container["securityContext"].get("allowPrivilegeEscalation") is not False
        else:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False

    probes = gateway["readinessProbe"], gateway["livenessProbe"], gateway["startupProbe"]
    assert all(p.get("tcpSocket", p.get("httpGet", {})).get("port") == 8080 for p in probes)
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/metrics"  # every app here keeps the built-in page
    assert gateway["ports"] == [{"name": "http", "containerPort": 8080}]

    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "spright_requests_in_flight"


def test_the_header_says_why_each_capability_and_volume_is_there(tmp_path: Path) -> None:
    docs = generate("k8s", SMALL, tmp_path, "--transport", "skmsg")
    said = header(tmp_path / "deployment.yaml")
    pod = docs["deployment.yaml"][0]["spec"]["template"]["spec"]
    for cap, why in GATEWAY_CAPS.items():
        assert f"gateway {cap}: {why}" in said, cap
    assert WORKERS_UNPRIVILEGED in said and GATEWAY_GROUP in said
    added = set().union(*(caps(container) for container in pod["containers"]))
    assert added == set(GATEWAY_CAPS), "the header names every capability the pod adds"
    for volume in pod["volumes"]:
        assert f" {volume['name']}: " in said, volume["name"]
    assert "SYS_ADMIN" in said and "allowPrivilegeEscalation" in said
    assert "prometheus-adapter" in header(tmp_path / "hpa.yaml")

    generate("k8s", SMALL, tmp_path / "unix", "--transport", "unix")
    said = header(tmp_path / "unix" / "deployment.yaml")
    assert "none added" in said and not any(f" {cap}: " in said for cap in GATEWAY_CAPS)
    generate("knative", SMALL, tmp_path / "knative")
    assert "kubernetes.podspec-volumes-emptydir" in header(tmp_path / "knative" / "knative.yaml")


def test_k8s_sizes_come_from_the_pool_and_the_instances(tmp_path: Path) -> None:
    deployment = generate("k8s", SMALL, tmp_path)["deployment.yaml"][0]
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["sizeLimit"] == SMALL_SHM
    workers = [c for c in pod["containers"] if c["args"][0] == "worker"]
    by_group = {c["args"][2]: c for c in workers}
    assert set(by_group) == SMALL_GROUPS
    assert by_group["gateway"]["name"] != "gateway"  # a function named gateway does not take the gateway's name
    instances = sorted(c["args"][5:] for c in workers if c["args"][2] == "gateway")
    assert instances == [[], ["--instance", "1"]], "a container per instance it starts with (2)"
    assert all(c["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"} for c in workers)
    gateway = containers(deployment)["gateway"]
    assert gateway["resources"]["requests"]["memory"] == f"{128 + 11}Mi"
    assert deployment["metadata"]["name"] == "small-app-v2"


def test_the_echo_pool_size_matches_its_default_pool(tmp_path: Path) -> None:
    """Default PoolConfig (8 MiB bodies), one domain: 16 + 64 + 68 + 64.5 MiB = 212.5 MiB; x1.25 -> 266Mi."""
    deployment = generate("k8s", "examples.echo:app", tmp_path)["deployment.yaml"][0]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["shm"]["emptyDir"]["sizeLimit"] == "266Mi"


def test_a_module_reference_gets_its_app_attribute(tmp_path: Path) -> None:
    deployment = generate("k8s", "examples.echo", tmp_path)["deployment.yaml"][0]
    assert containers(deployment)["gateway"]["args"][1] == "examples.echo:app"


# -- Knative mode --------------------------------------------------------------------------

def check_knative_service(doc: dict[str, Any]) -> dict[str, Any]:
    """What Knative requires of a Service (no schema ships for it), and its pod spec through
    the core/v1 Pod schema. Returns the container."""
    assert doc["apiVersion"] == "serving.knative.dev/v1" and doc["kind"] == "Service"
    name = doc["metadata"]["name"]
    assert DNS_LABEL.fullmatch(name) and len(name) <= 63, name
    assert len(f"{name}-00001-private") <= 63, "the revision's private Service must fit a DNS label too"
    template = doc["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["image"]
    (port,) = container["ports"]
    assert port["containerPort"] == 8080
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    for key in ("target", "min-scale", "max-scale"):
        value = annotations.get(f"autoscaling.knative.dev/{key}")
        if value is not None:
            assert isinstance(value, str) and value.isdigit() and int(value) >= 1, (key, value)
    if "autoscaling.knative.dev/max-scale" in annotations:
        low, high = (int(annotations[f"autoscaling.knative.dev/{key}"]) for key in ("min-scale", "max-scale"))
        assert low <= high
    spec = {k: v for k, v in template["spec"].items() if k not in KNATIVE_ONLY}
    assert 0 <= template["spec"]["containerConcurrency"] <= 1000
    k8s_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
    return container


@pytest.mark.parametrize("reference", [*APPS, SMALL])
def test_knative_services_are_valid_and_reach_each_other(reference: str, tmp_path: Path) -> None:
    (docs,) = generate("knative", reference, tmp_path, "--namespace", "shop").values()
    app = load_app(reference)
    functions = list(app.functions)
    assert len(docs) == len(functions) + 1  # a service per function, and the ingress
    names = [doc["metadata"]["name"] for doc in docs]
    assert len(set(names)) == len(names)
    ingress, *per_function = docs
    assert ingress["metadata"]["name"].endswith("-ingress")

    served = {}
    for doc in per_function:
        container = check_knative_service(doc)
        assert container["args"] == ["run", reference, "--host", "0.0.0.0", "--port", "8080", "--transport", "http"]
        served[doc["metadata"]["annotations"]["spright/function"]] = doc
        assert doc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert list(served) == functions, "one service per function (not per process group), in order"
    urls = {fn: f"http://{doc['metadata']['name']}.shop.svc.cluster.local" for fn, doc in served.items()}
    for function, doc in served.items():
        (env,) = doc["spec"]["template"]["spec"]["containers"][0]["env"]
        assert env["name"] == "SPRIGHT_REMOTES"
        assert json.loads(env["value"]) == {fn: url for fn, url in urls.items() if fn != function}

    container = check_knative_service(ingress)
    assert container["args"] == ["run", reference, "--host", "0.0.0.0", "--port", "8080", "--transport", "http"]
    assert json.loads(container["env"][0]["value"]) == urls
    assert "networking.knative.dev/visibility" not in ingress["metadata"]["labels"]


def test_knative_scaling_follows_the_app(tmp_path: Path) -> None:
    (docs,) = generate("knative", SMALL, tmp_path).values()
    by_function = {d["metadata"]["annotations"]["spright/function"]: d for d in docs[1:]}

    def scale(function: str) -> tuple[str, str, str]:
        notes = by_function[function]["spec"]["template"]["metadata"]["annotations"]
        return tuple(notes[f"autoscaling.knative.dev/{key}"] for key in ("min-scale", "max-scale", "target"))

    assert scale("ledger")[:2] == ("1", "1")  # stateful: exactly one instance (App refuses it more)
    assert scale("resize") == ("2", "7", "5")  # its ScalePolicy
    assert scale("gateway") == ("2", "3", "45")  # instances/max_instances; 70% of concurrency 64
    assert scale("front_door") == ("1", "1", "45")
    assert by_function["a.b"]["metadata"]["name"] != by_function["a_b"]["metadata"]["name"]
    shm = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] for d in docs}
    assert shm[docs[0]["metadata"]["name"]] == SMALL_SHM  # the ingress maps both domains' pools
    assert shm[by_function["ledger"]["metadata"]["name"]] == "6Mi"  # one domain: 4.125 MiB x1.25 -> 6Mi


def test_command_lines_come_from_one_function() -> None:
    assert command_line("gateway", "m:app", transport="skmsg", node_dir="/run/spright") == [
        "spright", "gateway", "m:app", "--node-dir", "/run/spright", "--host", "0.0.0.0", "--port", "8080",
        "--transport", "skmsg"]
    assert command_line("worker", "m:app", transport="unix", node_dir="/run/spright", group="g") == [
        "spright", "worker", "m:app", "g", "--node-dir", "/run/spright"]
    assert command_line("worker", "m:app", transport="unix", node_dir="/run/spright", group="g", instance=2) == [
        "spright", "worker", "m:app", "g", "--node-dir", "/run/spright", "--instance", "2"]
    assert command_line("node", "m:app", transport="http") == [
        "spright", "run", "m:app", "--host", "0.0.0.0", "--port", "8080", "--transport", "http"]
    with pytest.raises(ValueError):
        command_line("worker", "m:app", transport="unix")


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["k8s", "knative"])
@pytest.mark.parametrize(("args", "message"), [
    (["no_such_module_xyz:app"], "cannot import module 'no_such_module_xyz'"),
    (["tests.test_deploy:nope"], "has no App named 'nope'"),
    (["examples.echo:app", "--namespace", "Bad_NS"], "--namespace 'Bad_NS' is not a namespace name"),
    (["examples.echo:app", "--image", "has space:1"], "is not an image reference"),
])
def test_bad_input_is_refused_clearly_and_writes_nothing(mode: str, args: list[str], message: str,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(deploy_app, [mode, *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("mode", ["k8s", "knative"])
def test_an_out_path_that_is_a_file_is_refused(mode: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for out, message in ((blocker, "exists and is not a directory"), (blocker / "sub", "cannot create --out")):
        result = runner.invoke(deploy_app, [mode, "examples.echo:app", "--out", str(out)])
        assert result.exit_code == 2 and message in result.output, result.output
    assert blocker.read_text() == "keep me"


def test_k8s_tls_secret_mounts_the_node_certificate_where_hops_need_it(tmp_path: Path) -> None:
    docs = generate("k8s", "tests.test_deploy:peers", tmp_path, "--transport", "unix", "--tls-secret", "peers-tls")
    (deployment,) = docs["deployment.yaml"]
    k8s_validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "peer-tls", "secret": {"secretName": "peers-tls", "defaultMode": 0o440}} in pod["volumes"]
    assert pod["securityContext"]["fsGroup"] == 65532, "the key is group-readable to the containers' group only"
    wanted = {"SPRIGHT_TLS_CERT": "/etc/spright/tls/tls.crt", "SPRIGHT_TLS_KEY": "/etc/spright/tls/tls.key",
              "SPRIGHT_TLS_CA": "/etc/spright/tls/ca.crt"}
    by_name = containers(deployment)
    for name, container in by_name.items():  # the gateway serves it, the remote worker calls with it; none else
        env = {e["name"]: e.get("value") for e in container["env"]}
        has = {"name": "peer-tls", "mountPath": "/etc/spright/tls", "readOnly": True} in container["volumeMounts"]
        assert has == (name in ("gateway", "worker-remote")), name
        assert (wanted.items() <= env.items()) == has, name
    assert "tcpSocket" in by_name["gateway"]["livenessProbe"], "the kubelet has no client certificate"
    assert "peer-tls: Secret peers-tls" in header(tmp_path / "deployment.yaml")
    plain = generate("k8s", "tests.test_deploy:peers", tmp_path / "plain", "--transport", "unix")
    assert "peer-tls" not in str(plain["deployment.yaml"]), "no TLS unless asked for"


@pytest.mark.parametrize(("mode", "app", "message"), [
    ("k8s", "examples.echo:app", "has no remote or exposed functions"),
    ("k8s", "tests.test_deploy:plain_peers", "plaintext URLs, give their https:// ones: far (http://10.0.0.2:8080)"),
    ("knative", "tests.test_deploy:peers", "Knative's queue-proxy reaches a container over plaintext HTTP only"),
])
def test_a_tls_secret_that_cannot_work_is_refused(mode: str, app: str, message: str, tmp_path: Path) -> None:
    result = runner.invoke(deploy_app, [mode, app, "--out", str(tmp_path / "out"), "--tls-secret", "certs"])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--transport", "http"], "--transport must be one of skmsg, unix"),
    (["--replicas", "0"], "--replicas must be >= 1"),
    (["--replicas", "3", "--max-replicas", "2"], "--max-replicas (2) must be >= --replicas (3)"),
])
def test_bad_k8s_options_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(deploy_app, ["k8s", "examples.echo:app", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
