"""Kubernetes pod mode without a cluster: the gateway (``spright gateway``) and each worker
process (``spright worker``) started on their own, each in its own mount and PID namespaces
(``unshare``), sharing only the node directory and /dev/shm, as the containers of the pod
``spright deploy k8s`` writes do. Workers run without any capability and see an empty bpffs:
on skmsg the gateway registers their sockets. A worker started before the gateway waits for it;
one that dies leaves the node and joins again when restarted; when the gateway stops, the
workers exit, and nothing is left in /dev/shm or the bpffs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from spright.host.nodefile import NodeFile
from spright.node.loader import load_app
from spright.ops.deploy.k8s import GATEWAY_CAPS, WORKER_UID
from spright.ops.traceview import kept_traces
from spright.transport.skmsg import pin_dir
from tests.kit.boutique import HttpShopper, concurrent_carts, on_node, scenario_browse, scenario_cart_and_checkout
from tests.kit.nodes import wait_node_file

pytestmark = [pytest.mark.node, pytest.mark.needs("netns")]


class Pod:
    """The processes of one pod-mode node, each in namespaces of its own."""

    def __init__(self, app_ref: str, transport: str, node_dir: Path, workers_uid: int | None = None) -> None:
        """``workers_uid``: the workers run as that uid and gid, not root, and the gateway (root)
        keeps only the capabilities deploy k8s gives it, with that group among its groups (the
        pod's fsGroup), as in the skmsg pod's manifest."""
        self.app_ref, self.transport, self.node_dir = app_ref, transport, node_dir
        self.workers_uid = workers_uid
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: never blocks them
        self.gateway: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, *args: str, namespaces: bool = True, unprivileged: bool = False) -> subprocess.Popen[bytes]:
        wrapper = ["unshare", "--mount", "--pid", "--kill-child=SIGTERM"] if namespaces else []
        uid = self.workers_uid
        if unprivileged:  # as a worker container: no capability at all, and no bpffs
            user = f"--reuid {uid} --regid {uid} --clear-groups " if uid is not None else ""
            wrapper += ["sh", "-c", f'mount -t tmpfs none /sys/fs/bpf && exec setpriv {user}--bounding-set=-all '
                        '--inh-caps=-all "$@"', "sh"]
        elif uid is not None:  # the gateway's container on skmsg (spright/ops/deploy/k8s.py)
            caps = ",".join(f"+{cap.lower()}" for cap in GATEWAY_CAPS)
            wrapper += ["setpriv", f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--groups", str(uid)]
            args = (*args, "--workers-group", str(uid))
        return subprocess.Popen([*wrapper, sys.executable, "-m", "spright", *args], stderr=self.log,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_worker(self, process: str, *, namespaces: bool = True) -> None:
        self.workers[process] = self._start("worker", self.app_ref, process, "--node-dir", str(self.node_dir),
                                            namespaces=namespaces, unprivileged=namespaces)

    def start_gateway(self) -> None:
        self.gateway = self._start("gateway", self.app_ref, "--node-dir", str(self.node_dir), "--port", "0",
                                   "--transport", self.transport)

    def port(self, timeout: float = 60.0) -> int:
        assert self.gateway is not None, "start_gateway() first"
        return wait_node_file(self.node_dir, self.gateway, timeout, self.output).port

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def signal(self, process: subprocess.Popen[bytes], signum: int) -> None:
        """To the spright process under ``unshare``, which ignores SIGTERM while it waits."""
        if Path(f"/proc/{process.pid}/exe").resolve().name != "unshare":
            process.send_signal(signum)
            return
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        with contextlib.suppress(OSError, ValueError):
            for child in children.read_text().split():
                os.kill(int(child), signum)

    def stop(self) -> None:
        for process in (self.gateway, *self.workers.values()):
            if process is not None and process.poll() is None:
                self.signal(process, signal.SIGTERM)
        for process in (self.gateway, *self.workers.values()):
            if process is not None:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    raise


@contextlib.contextmanager
def pod(app_ref: str, transport: str, tmp_path: Path, workers_uid: int | None = None) -> Iterator[tuple[Pod, int]]:
    groups = list(load_app(app_ref).compile().processes())
    node = Pod(app_ref, transport, tmp_path / "node", workers_uid)
    node.node_dir.mkdir(mode=0o700)
    if workers_uid is not None:  # as Kubernetes makes a pod's emptyDir with its fsGroup
        os.chown(node.node_dir, 0, workers_uid)
        node.node_dir.chmod(0o770)
    try:
        node.start_worker(groups[0])  # before its gateway: it waits
        deadline = time.monotonic() + 60
        while "waiting up to" not in node.output():
            assert time.monotonic() < deadline and node.workers[groups[0]].poll() is None, node.output()
            time.sleep(0.05)
        node.start_gateway()
        for group in groups[1:]:
            node.start_worker(group)
        yield node, node.port()
    finally:
        node.stop()


def pod_shm(node_dir: Path) -> tuple[str, ...]:
    """The prefixes of what the pod's gateway put in /dev/shm (its join.json names them): the
    pools' segments and locks and the counter segments; other nodes on the machine are not ours."""
    info = json.loads((node_dir / "join.json").read_text())
    return (*info["counters"].values(), *(name for prefix, lock in info["pools"].values()
                                for name in (f"{prefix}-", f"sem.{lock.lstrip('/')}")))


def left_in_shm(prefixes: tuple[str, ...]) -> list[str]:
    return [p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(prefixes)]


@pytest.mark.parametrize("plane", [pytest.param("skmsg", marks=pytest.mark.kernel), "unix"])
async def test_echo_in_pod_mode_survives_a_worker_restart(plane: str, tmp_path: Path) -> None:
    with pod("examples.echo:app", plane, tmp_path) as (node, port):
        ours = pod_shm(node.node_dir)
        assert len(left_in_shm(ours)) >= 3, "the pod's segments are found by their names"
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async def echo(body: bytes) -> tuple[int, bytes]:
                async with session.post("/echo", data=body) as reply:
                    return reply.status, await reply.read()

            bodies = [os.urandom(256) + b"%d" % i for i in range(200)]
            assert await asyncio.gather(*(echo(b) for b in bodies)) == [(200, b) for b in bodies]
            deadline = time.monotonic() + 30
            while True:  # the gateway publishes its counters once a tick
                shown = subprocess.run([sys.executable, "-m", "spright", "stats", "--json"], capture_output=True,
                                       env={**os.environ, "SPRIGHT_NODE_DIR": str(node.node_dir)}, check=True)
                if orjson.loads(shown.stdout)["requests"] == 200:
                    break  # stats finds the pod's node by its directory
                assert time.monotonic() < deadline, shown.stdout
            node.signal(node.workers["enrich"], signal.SIGKILL)  # the container dies ...
            node.workers["enrich"].wait(10)
            deadline = time.monotonic() + 30
            while True:  # until the gateway has seen its control connection end
                async with session.get("/metrics") as reply:
                    if 'spright_instances{domain="echo",function="enrich"} 0.0' in await reply.text():
                        break
                assert time.monotonic() < deadline, "the gateway never saw the worker go"
                await asyncio.sleep(0.05)
            status, _ = await echo(b"meanwhile")
            assert status in (502, 503), status  # at once, not at the route's timeout
            node.start_worker("enrich")  # ... and its restart joins the node again
            for _ in range(100):
                if (await echo(b"back"))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            assert await echo(b"back again") == (200, b"back again")
        pins = pin_dir(node.node_dir, by_dir=True)
        assert plane != "skmsg" or pins.exists()
    for process in node.workers.values():
        assert process.returncode is not None, "a worker outlived its gateway"
    assert not pins.exists(), "the gateway left its pins"
    assert left_in_shm(ours) == [], "a pod left segments in /dev/shm"
    assert "left the node" in node.output()


@pytest.mark.kernel
async def test_online_boutique_in_pod_mode_on_skmsg(tmp_path: Path) -> None:
    with pod("apps.online_boutique:app", "skmsg", tmp_path) as (_, port):
        url = f"http://127.0.0.1:{port}"
        await on_node(url, scenario_browse)
        await on_node(url, scenario_cart_and_checkout)
        shoppers: list[HttpShopper] = []

        def make() -> HttpShopper:
            shoppers.append(HttpShopper(url))
            return shoppers[-1]

        try:
            await concurrent_carts(make, users=20)
        finally:
            await asyncio.gather(*(s.close() for s in shoppers))


@pytest.mark.kernel
def test_a_pod_traces_every_hop_its_unprivileged_workers_run(tmp_path: Path) -> None:
    """The app's Config traces; the workers, started on their own without privilege, find the
    node's span rings beside its counters and record their hops and calls there."""
    with pod("tests.apps.traced:sampled", "skmsg", tmp_path) as (node, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=30) as response:
            timing = response.headers["server-timing"]
        (trace,) = kept_traces(NodeFile.read(node.node_dir / "node.json").traces)
    assert [metric.split(";")[0] for metric in timing.split(", ")] == ["front", "back", "total"]
    assert trace.complete
    assert sorted(span.name for span in trace.root.children) == ["back", "front"]
    (front,) = [span for span in trace.root.children if span.name == "front"]
    assert [span.name for span in front.children] == ["front.call(lookup)"]
    assert [span.name for span in front.children[0].children] == ["lookup"]


def test_a_worker_without_a_gateway_gives_up_clearly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "spright", "worker", "examples.echo:app", "parse", "--node-dir",
                           str(tmp_path), "--wait", "0.5"], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "no gateway wrote" in done.stderr, done.stderr


def test_a_worker_naming_no_process_is_refused(tmp_path: Path) -> None:
    with pod("examples.echo:app", "unix", tmp_path) as (_, _port):
        done = subprocess.run([sys.executable, "-m", "spright", "worker", "examples.echo:app", "nope", "--node-dir",
                               str(tmp_path / "node")], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "has no worker process 'nope'" in done.stderr, done.stderr


def test_a_worker_killed_outside_a_pid_namespace_leaves_the_pool_alone(tmp_path: Path) -> None:
    """Without a PID namespace of its own, a killed worker's resource tracker outlives it: it
    must not unlink the node's pool and counters, which the worker only attached to."""
    with pod("examples.echo:app", "unix", tmp_path) as (node, port):
        node.signal(node.workers["enrich"], signal.SIGTERM)
        node.workers["enrich"].wait(10)
        for _ in range(2):  # killed twice, plainly started
            node.start_worker("enrich", namespaces=False)
            assert _echo_eventually(port, b"plain"), node.output()
            worker = node.workers["enrich"]
            trackers = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
            assert trackers, "the worker's resource tracker runs"
            worker.kill()
            worker.wait(10)
            deadline = time.monotonic() + 30
            while any(Path(f"/proc/{pid}").exists() for pid in trackers):  # it did whatever it does, and left
                assert time.monotonic() < deadline, "the killed worker's resource tracker lives on"
                time.sleep(0.05)
        node.start_worker("enrich")
        assert _echo_eventually(port, b"after"), node.output()
    assert "leaked shared_memory" not in node.output()


def _echo_eventually(port: int, body: bytes, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/echo", data=body, method="POST")
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=5) as answer:
            if answer.status == 200 and answer.read() == body:
                return True
        time.sleep(0.1)
    return False


@pytest.mark.kernel
def test_a_gateway_waiting_for_its_workers_stops_at_once(tmp_path: Path) -> None:
    """SIGTERM before every worker joined (a pod deleted while starting): it stops at once, as
    Kubernetes expects within its grace period, and takes its pins and segments along."""
    node = Pod("examples.echo:app", "skmsg", tmp_path / "node")
    node.node_dir.mkdir(mode=0o700)
    node.start_gateway()
    deadline = time.monotonic() + 30
    while not (node.node_dir / "join.json").exists():  # it waits for its workers now
        assert time.monotonic() < deadline and node.gateway is not None and node.gateway.poll() is None, node.output()
        time.sleep(0.1)
    assert node.gateway is not None
    ours = pod_shm(node.node_dir)
    node.signal(node.gateway, signal.SIGTERM)
    # it would wait ready_timeout (60 s) for its workers; 20 s is far below and far above "at once"
    node.gateway.wait(20)
    assert not pin_dir(node.node_dir, by_dir=True).exists() and left_in_shm(ours) == []


def _post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def _open_as(uid: int, path: Path) -> str:
    """What opening ``path`` read-write met, for a process of uid and gid ``uid``, no other group."""
    script = f"import os\ntry:\n    os.close(os.open({str(path)!r}, os.O_RDWR))\n    print('opened')\n" \
             "except OSError as exc:\n    print(type(exc).__name__)"
    return subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", sys.executable,
                           "-c", script], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.kernel
@pytest.mark.needs("root")
def test_skmsg_pod_workers_run_as_the_pods_user_and_serve() -> None:
    """The skmsg pod of deploy k8s: the gateway is root with its four capabilities only (no
    CAP_CHOWN, no CAP_DAC_OVERRIDE) and the workers' group among its groups; the workers'
    containers run as uid 65532 with no capability. The gateway hands them the node's files
    (--workers-group): they join, serve chains and calls over skmsg, and every handler runs as
    65532; those files are the workers' group's and no other uid's, and the gateways' own
    counters stay out of a worker's reach."""
    base = Path(tempfile.mkdtemp(prefix="spright-pod-"))
    base.chmod(0o711)  # pytest's own temporary directory is root's 0700
    try:
        with pod("tests.apps.privileges:app", "skmsg", base, workers_uid=WORKER_UID) as (node, port):
            info = json.loads((node.node_dir / "join.json").read_text())
            gateways_counters = Path("/dev/shm") / info["counters"]["0"]
            status, body = _post(port, "/probe", orjson.dumps({"path": str(gateways_counters)}))
            probe = orjson.loads(body)
            assert status == 200 and probe["uids"] == [WORKER_UID] * 3 and probe["gids"] == [WORKER_UID] * 3, probe
            assert probe["open"] == "PermissionError", "a worker read the gateways' counters"
            for process in node.workers.values():  # their pids in the pod's PID namespace are not ours
                (child,) = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
                with open(f"/proc/{child}/status") as proc:
                    fields = dict(line.split(":", 1) for line in proc)
                assert fields["Uid"].split() == [str(WORKER_UID)] * 4, fields["Uid"]
                assert int(fields["CapEff"], 16) == int(fields["CapPrm"], 16) == 0, fields["CapEff"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/call", timeout=30) as response:
                called = orjson.loads(response.read())
            assert called["caller"]["uids"] == called["probe"]["uids"] == [WORKER_UID] * 3, called
            assert [_post(port, "/chain", b"%d" % i) for i in range(50)] == [(200, b"%d12" % i) for i in range(50)]
            prefixes = tuple(name for name in pod_shm(node.node_dir) if name != info["counters"]["0"])
            handed = [Path("/dev/shm") / name for name in left_in_shm(prefixes)]
            assert len(handed) >= 4, handed  # the pool's control and classes, its lock, the domain's counters
            for path in [*handed, node.node_dir / "join.json", node.node_dir / "control.sock"]:
                mode = path.stat()
                assert (mode.st_uid, mode.st_gid) == (0, WORKER_UID) and mode.st_mode & 0o007 == 0, path
            assert _open_as(WORKER_UID, handed[0]) == "opened"
            scale = orjson.dumps({"scale": "probe", "instances": 2}).decode() + "\n"
            script = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
                      f"s.sendall({scale!r}.encode())\nprint(s.makefile().readline())")
            said = subprocess.run(["setpriv", "--reuid", str(WORKER_UID), "--regid", str(WORKER_UID), "--clear-groups",
                                   sys.executable, "-c", script, str(node.node_dir / "control.sock")],
                                  capture_output=True, text=True, check=True).stdout
            assert "a worker may join" in said, said  # the workers' user reaches the control socket to join only
            assert _open_as(WORKER_UID + 1, handed[0]) == "PermissionError", "another uid opened the pool"
    finally:
        shutil.rmtree(base, ignore_errors=True)
