"""``spright deploy``: write the image recipe and the manifests that run an app on a cluster.

    spright deploy k8s apps.online_boutique:app --out deploy        # one node per pod replica
    spright deploy knative apps.online_boutique:app --out deploy    # a Knative Service per function
"""

from __future__ import annotations

import math
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer
import yaml

import spright
from spright.node.loader import AppNotFound, load_app
from spright.ops.deploy import k8s, knative
from spright.ops.deploy.plan import TRANSPORTS_K8S, Target
from spright.routing import App, RoutingError

deploy_app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
    help="Write the Dockerfile and manifests that run an app on Kubernetes (pods) or Knative (docs/deploy.md).",
)

_RFC1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
APP_HELP = "MODULE or MODULE:APP, importable from the project root (the image's working directory)."
OUT_HELP = "Directory to write into (created if missing; files of the same names are replaced)."
IMAGE_HELP = "Image the manifests run (default: spright-<app>:<spright version>); push it where the cluster pulls."


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@deploy_app.command("k8s")
def k8s_command(
    app: str = typer.Argument(..., help=APP_HELP),
    out: str = typer.Option(..., "--out", help=OUT_HELP),
    image: str | None = typer.Option(None, help=IMAGE_HELP),
    namespace: str = typer.Option("default", help="Namespace of every object."),
    replicas: int = typer.Option(1, help="Pods (whole nodes) to start with: the HPA's minimum."),
    max_replicas: int | None = typer.Option(None, help="The HPA's maximum (default: 4 x --replicas)."),
    transport: str = typer.Option("skmsg", help="Data plane inside each pod: skmsg (eBPF) or unix."),
    tls_secret: str | None = typer.Option(
        None, metavar="SECRET", help="Mutual TLS between nodes, from this kubernetes.io/tls Secret (with ca.crt)."),
) -> None:
    """Kubernetes pod mode: a Deployment whose pod is one node (gateway + a container per process
    group), a Service, an HPA on the gateways' requests in flight, and the Dockerfile."""
    if transport not in TRANSPORTS_K8S:
        raise _fail(f"--transport must be one of {', '.join(TRANSPORTS_K8S)} in a pod, got {transport!r} "
                    "(the http data plane is `spright deploy knative`)")
    if replicas < 1:
        raise _fail(f"--replicas must be >= 1, got {replicas}")
    most = 4 * replicas if max_replicas is None else max_replicas
    if most < replicas:
        raise _fail(f"--max-replicas ({most}) must be >= --replicas ({replicas})")
    target = _target(app, image, namespace)
    command = f"spright deploy k8s {target.reference} --transport {transport}"
    if tls_secret is not None:
        _check_tls(target, tls_secret)
        command += f" --tls-secret {tls_secret}"
    _write(Path(out), target, {
        "deployment.yaml": lambda: _header(command, k8s.deployment_notes(target, transport, tls_secret))
        + _yaml(k8s.deployment(target, transport, replicas, tls_secret)),
        "service.yaml": lambda: _header(command) + _yaml(k8s.service(target)),
        "hpa.yaml": lambda: _header(command, [k8s.HPA_METRIC_NOTE]) + _yaml(k8s.hpa(target, replicas, most)),
    })


@deploy_app.command("knative")
def knative_command(
    app: str = typer.Argument(..., help=APP_HELP),
    out: str = typer.Option(..., "--out", help=OUT_HELP),
    image: str | None = typer.Option(None, help=IMAGE_HELP),
    namespace: str = typer.Option("default", help="Namespace of every service (it is in their URLs)."),
    tls_secret: str | None = typer.Option(None, metavar="SECRET", help="Refused: see docs/deploy.md."),
) -> None:
    """Knative mode: a Knative Service per function (http data plane, autoscaled per function)
    and an <app>-ingress Service holding the routes, in knative.yaml; and the Dockerfile."""
    if tls_secret is not None:
        raise _fail("--tls-secret is for `spright deploy k8s`: Knative's queue-proxy reaches a container over "
                    "plaintext HTTP only, so one serving mutual TLS would be unreachable; encrypt between Knative "
                    "services with Knative's own system-internal-tls (docs/deploy.md, \"TLS between nodes\")")
    target = _target(app, image, namespace)
    command = f"spright deploy knative {target.reference}"
    _write(Path(out), target, {
        "knative.yaml": lambda: _header(command, knative.NOTES)
        + yaml.safe_dump_all(knative.services(target), sort_keys=False, width=math.inf),
    })


def _check_tls(target: Target, secret: str) -> None:
    """--tls-secret makes sense for an app with hops to or from other nodes, all to https:// peers."""
    if not _RFC1123.fullmatch(secret) or len(secret) > 253:
        raise _fail(f"--tls-secret {secret!r} is not a Secret name (lower case letters, digits, '-' and '.')")
    from spright.worker.remote import exposes, remote_urls  # (httptools: `spright deploy` only, not every command)

    urls = remote_urls(target.app.functions)
    if not urls and not exposes(target.table):
        raise _fail(f"--tls-secret: {target.reference} has no remote or exposed functions, no hop between nodes")
    if plain := [f"{name} ({url})" for name, url in urls if not url.startswith("https:")]:
        raise _fail(f"--tls-secret: remote functions at plaintext URLs, give their https:// ones: {', '.join(plain)}")


def _yaml(document: dict[str, Any]) -> str:
    # width=inf: no folding of long strings (SPRIGHT_REMOTES, args) over several lines
    return yaml.safe_dump(document, sort_keys=False, width=math.inf)


def _header(command: str, notes: Iterable[str] = ()) -> str:
    """The comment block a manifest starts with: who wrote it, then ``notes`` (why each privilege
    and volume is there), each wrapped to 100 columns, its continuation lines indented."""
    lines = [f"Written by `{command}` (spright {spright.__version__}); see docs/deploy.md.", *notes]
    out = []
    for line in lines:
        if not line.isprintable():  # a comment is one line: a newline in a path must not end it
            line = line.encode("unicode_escape").decode("ascii")
        indent = " " * (len(line) - len(line.lstrip(" ")) + 2)
        out += textwrap.wrap(line, width=98, subsequent_indent=indent, break_long_words=False,
                             break_on_hyphens=False) or [""]
    return "".join(f"# {text}".rstrip() + "\n" for text in out)


def _target(reference: str, image: str | None, namespace: str) -> Target:
    if not _RFC1123.fullmatch(namespace) or len(namespace) > 63:
        raise _fail(f"--namespace {namespace!r} is not a namespace name (lower case letters, digits and '-', "
                    "at most 63)")
    try:
        app = load_app(reference)
    except AppNotFound as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:  # the module itself failed to import: say what it raised
        raise _fail(f"importing {reference!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        table = app.compile()
    except RoutingError as exc:
        raise _fail(str(exc)) from None
    target = Target(app, table, _reference(reference, app), "", namespace)
    image = image or f"spright-{target.name}:{spright.__version__}"
    if not _IMAGE.fullmatch(image):
        raise _fail(f"--image {image!r} is not an image reference (NAME:TAG, e.g. registry.example/spright:1)")
    return Target(app, table, target.reference, image, namespace)


def _reference(reference: str, app: App) -> str:
    """MODULE:APP as a container imports it: the attribute named, a file path kept relative to
    the project root (the image's working directory)."""
    module, _, attribute = reference.partition(":")
    if module.endswith(".py"):
        path = Path(module)
        if path.is_absolute() or ".." in path.parts:
            try:
                module = Path(os.path.relpath(path.resolve(), Path.cwd())).as_posix()
            except ValueError:
                module = ".."
            if module.startswith(".."):
                raise _fail(f"{reference!r} is outside the current directory: the image holds the project "
                            "root (the build context), so give a module or a path inside it")
        name = path.stem
    else:
        name = module
    if not attribute:
        found = [key for key, value in vars(sys.modules[name]).items() if value is app]
        attribute = found[0]
    return f"{module}:{attribute}"


def _write(out: Path, target: Target, manifests: dict[str, Callable[[], str]]) -> None:
    if out.exists() and not out.is_dir():
        raise _fail(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot create --out {out}: {exc.strerror or exc}") from None
    shown = _shown(out)
    files: dict[str, Any] = {
        "Dockerfile": lambda: k8s.dockerfile(target, shown),
        "Dockerfile.dockerignore": lambda: k8s.DOCKERIGNORE,
        **manifests,
    }
    try:
        texts = {name: render() for name, render in files.items()}  # everything, before any write
    except ValueError as exc:
        raise _fail(f"cannot write the manifests of {target.reference}: {exc}") from None
    for name, text in texts.items():
        path = out / name
        try:
            path.write_text(text)
        except OSError as exc:
            raise _fail(f"cannot write {path}: {exc.strerror or exc}") from None
        typer.echo(f"wrote {_shown(path)}")
    typer.echo(f"build the image from the project root: docker build -f {shown}/Dockerfile -t {target.image} .")
    typer.echo(f"then push it where the cluster pulls from, and: kubectl apply -f {shown}/")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (as the build commands want)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)
