"""``spright stats`` and ``spright routes`` as users run them: a subprocess against real nodes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console

from spright.statsview import compact, stats_table
from spright.testing import run_node
from tests.apps.demo import app as demo


def spright(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spright", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def echo_node(transport: str, runtime_dir: Path):
    with run_node("examples.echo:app", transport=transport) as (port, process):
        yield port, process, transport


async def send(port: int, n: int, path: str = "/echo") -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.post(f"http://127.0.0.1:{port}{path}", data=b"hello") as response:
                await response.read()


def stats_of(*args: str) -> dict:
    result = spright("stats", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_stats_json_counts_the_requests_sent(echo_node) -> None:
    port, process, transport = echo_node
    before = {f["name"]: f for f in stats_of("--port", str(port))["functions"]}
    await send(port, 20)
    await send(port, 3, "/missing")
    after = stats_of("--port", str(port))
    assert after["node"] == {"pid": process.pid, "app": "echo", "port": port, "transport": transport}
    for function in after["functions"]:
        if function["name"] == "gateway":
            continue
        old = before[function["name"]]
        assert function["domain"] == "echo"
        assert function["descriptors_in"] - old["descriptors_in"] == 20
        assert function["descriptors_out"] - old["descriptors_out"] == 20
        assert function["payload_bytes"] - old["payload_bytes"] == 20 * 5
        assert function["handler_errors"] == 0
        assert function["handled"] - old["handled"] == 20 and function["handler_ns"] > old["handler_ns"]
        assert ("kernel" in function) == after["kernel_counters"]
    # the gateway publishes its own row every 0.1 s: it may lag a moment
    for _ in range(20):
        gateway = stats_of("--node", str(process.pid))
        if gateway["requests"] >= 23:
            break
    assert gateway["responses"]["4xx"] >= 3 and gateway["responses"]["2xx"] >= 20
    assert gateway["requests"] == sum(gateway["responses"].values())


def test_stats_table_names_every_function(echo_node) -> None:
    port, *_ = echo_node
    result = spright("stats", "--port", str(port))
    assert result.returncode == 0, result.stderr
    for name in ("gateway", "parse", "enrich", "reply"):
        assert name in result.stdout
    assert "µs/run" in result.stdout


def test_routes_live_reads_the_running_nodes_table(echo_node) -> None:
    port, process, transport = echo_node
    result = spright("routes", "--live", "--json", "--port", str(port))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["node"]["pid"] == process.pid
    assert [(r["method"], r["path"]) for r in data["routes"]] == [("POST", "/echo")]
    hops = [hop["name"] for hop in data["routes"][0]["hops"]]
    assert hops == ["parse", "enrich", "reply", "gateway"]
    assert data["source"] == {"skmsg": "bpf-map", "unix": "node-file"}[transport]  # AF_UNIX keeps no table
    if transport == "skmsg":
        assert data["routes"][0]["matches_compiled"]
    text = spright("routes", "--live", "--port", str(port))
    assert text.returncode == 0 and "parse" in text.stdout and "source:" in text.stdout


def test_no_node_running_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPRIGHT_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "999999999").mkdir()  # a node that was SIGKILLed left its file: not running
    (tmp_path / "999999999" / "node.json").write_text(json.dumps({"pid": 999999999, "port": 1}))
    for command in (("stats",), ("routes", "--live")):
        result = spright(*command)
        assert result.returncode == 1
        assert result.stdout.strip() == "no spright node is running on this machine"


@pytest.mark.node
def test_node_and_port_choose_among_several(runtime_dir: Path) -> None:
    with run_node("examples.echo:app") as (port_a, a), run_node("tests.apps.demo:app") as (port_b, b):
        ambiguous = spright("stats", "--json")
        assert ambiguous.returncode == 2
        assert "--node" in ambiguous.stderr and str(a.pid) in ambiguous.stderr and str(b.pid) in ambiguous.stderr
        assert stats_of("--node", str(b.pid))["node"]["app"] == "demo"
        assert stats_of("--port", str(port_a))["node"]["app"] == "echo"
        names = {f["name"] for f in stats_of("--port", str(port_b))["functions"]}
        assert names == {"gateway", *demo.functions}
        wrong = spright("stats", "--port", "1")
        assert wrong.returncode == 2 and "no running spright node has port 1" in wrong.stderr


def test_routes_from_a_module_still_work() -> None:
    result = spright("routes", "examples.echo", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [f["name"] for f in data["functions"]] == ["parse", "enrich", "reply"]
    assert spright("routes").returncode == 2  # neither MODULE nor --live


def test_doctor_lists_transports_and_latency_checks() -> None:
    result = spright("doctor")
    assert result.returncode == 0, result.stderr
    assert "--transport auto would use:" in result.stdout
    assert "latency on this machine" in result.stdout and "interpreter" in result.stdout


@pytest.mark.parametrize(("content", "off"), [("0\n", True), ("200000\n", False), (None, False)])
def test_halt_polling_check_reads_the_module_parameter(content, off, tmp_path: Path, monkeypatch) -> None:
    from spright import tuning

    parameter = tmp_path / "guest_halt_poll_ns"
    if content is not None:
        parameter.write_text(content)
    monkeypatch.setattr(tuning, "HALT_POLL", parameter)
    assert tuning.halt_polling_off() is off
    assert tuning.latency_hints()[1][1] is not off  # the doctor's row: fine unless polling is off


def test_stats_watch_prints_rates_until_interrupted(echo_node) -> None:
    port, *_ = echo_node
    command = [sys.executable, "-m", "spright", "stats", "--port", str(port), "--watch", "0.2", "--json"]
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        documents, text = [], ""
        for line in watch.stdout:  # type: ignore[union-attr]
            text += line
            if line.rstrip() == "}":  # one indented JSON document per refresh
                documents.append(json.loads(text))
                text = ""
                if len(documents) == 3:
                    break
    finally:
        watch.send_signal(signal.SIGINT)
        _, stderr = watch.communicate(timeout=10)
    assert watch.returncode == 0, stderr
    for document in documents:
        assert document["node"]["port"] == port
        assert set(document["rates"]) == {"gateway", "parse", "enrich", "reply"}
        assert set(document["rates"]["parse"]) == {"descriptors_in", "descriptors_out", "payload_bytes",
                                                   "handler_errors", "calls"}


def test_stats_table_stays_readable_in_80_columns() -> None:
    """Big counters abbreviated, nothing cut to an ellipsis, every name whole."""
    names = ["gateway", "frontend", "productcatalog", "currency", "recommendation"]
    functions = [{"id": i, "name": name, "domain": "payments" if i == 4 else "shop", "descriptors_in": 24_300_000,
                  "descriptors_out": 1_234_567, "payload_bytes": 5_000_000_000, "handler_errors": 12, "calls": 999,
                  "handled": 24_300_000, "handler_ns": 24_300_000 * 35_000,
                  "kernel": {"sent": 24_300_000, "received": 7, "bytes_sent": 1, "bytes_received": 1, "dropped": 0,
                             "redirect_failed": 0, "domain_drops": 3, "bad_route": 0}}
                 for i, name in enumerate(names)]
    now = {"node": {"pid": 1234, "app": "online_boutique", "port": 8080, "transport": "skmsg"},
           "requests": 24_300_000, "responses": {"1xx": 0, "2xx": 24_299_000, "3xx": 0, "4xx": 1000, "5xx": 0},
           "kernel_counters": True, "functions": functions}
    before = {**now, "functions": [{**f, "descriptors_in": f["descriptors_in"] - 45_000} for f in functions]}
    for previous in (None, before):  # stats, and stats --watch
        console = Console(width=80, record=True)
        console.print(stats_table(now, previous, 1.0))
        text = console.export_text()
        assert "…" not in text, text
        assert max(map(len, text.splitlines())) <= 80
        assert all(name in text for name in names) and "payments" in text
        assert "35" in text and "24.3M" in text  # µs/run; the kernel's sent
        assert ("45.0k" in text and "in/s" in text) if previous else ("5.0G" in text and "1.2M" in text)


def test_compact_numbers() -> None:
    assert [compact(n) for n in (0, 7, 999, 9999, 10_000, 24_300, 123_456, 1_234_567, 5e9, 2.5)] == [
        "0", "7", "999", "9999", "10.0k", "24.3k", "123k", "1.2M", "5.0G", "2.5"]


def test_the_read_only_commands_import_nothing_of_the_serving_side() -> None:
    """spright stats and routes start fast: no uvloop, httptools, gateway, worker or supervisor."""
    serving = ["uvloop", "httptools", "spright.gateway", "spright.runtime", "spright.http", "spright.supervisor",
               "spright.process"]
    script = ("import sys\nfrom typer.testing import CliRunner\nimport spright.cli\n"
              "for args in (['stats', '--json'], ['routes', '--live'], ['routes', 'examples.echo'], ['doctor']):\n"
              "    CliRunner().invoke(spright.cli.cli, args)\n"
              f"print([m for m in {serving!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
