"""``spright stats`` and ``spright routes`` as users run them: a subprocess against real nodes."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from rich.console import Console

from spright.host.counters import COLUMNS, ROW_WORDS
from spright.host.nodefile import BadNodeFile, CounterSegment, NodeFile
from spright.ops.statsview import compact, stats_table
from spright.testing import free_port, run_node
from tests.apps.demo import app as demo
from tests.kit.nodes import spright


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
    assert after["node"] == {"pid": process.pid, "app": "echo", "port": port, "transport": transport.split()[0]}
    assert after["kernel_counters"] == (transport in ("skmsg", "http --sidecar"))
    for function in after["functions"]:
        if function["name"] == "gateway":
            continue
        old = before[function["name"]]
        if transport == "http --sidecar":  # each function's queue-proxy counted what it passed on
            assert function["kernel"]["requests"] - old["kernel"]["requests"] == 20
            assert function["kernel"]["in_flight"] == function["kernel"]["failed"] == 0
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
    assert data["source"] == {"skmsg": "bpf-map"}.get(transport, "node-file")  # the others keep no route table
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
        # in a node's own process, or a pod's container, $SPRIGHT_NODE_DIR names the node meant
        own = subprocess.run([sys.executable, "-m", "spright", "stats", "--json"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "SPRIGHT_NODE_DIR": str(runtime_dir / str(b.pid))})
        assert own.returncode == 0 and json.loads(own.stdout)["node"]["app"] == "demo", own.stderr


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
    assert "D-SPRIGHT" in result.stdout and "poll" in result.stdout  # each data plane says what it is
    assert "latency on this machine" in result.stdout and "interpreter" in result.stdout


@pytest.mark.parametrize(("content", "off"), [("0\n", True), ("200000\n", False), (None, False)])
def test_halt_polling_check_reads_the_module_parameter(content, off, tmp_path: Path, monkeypatch) -> None:
    from spright.ops import tuning

    parameter = tmp_path / "guest_halt_poll_ns"
    if content is not None:
        parameter.write_text(content)
    monkeypatch.setattr(tuning, "HALT_POLL", parameter)
    assert tuning.halt_polling_off() is off
    assert tuning.latency_hints()[1][1] is not off  # the doctor's row: fine unless polling is off


def test_stats_watch_prints_rates_until_interrupted(echo_node) -> None:
    """--watch --json: one JSON document per refresh, with rates, and nothing else (even when
    stdout is a terminal: TTY_COMPATIBLE=1 makes rich believe it is one); SIGINT ends it with 0."""
    port, *_ = echo_node
    command = [sys.executable, "-m", "spright", "stats", "--port", str(port), "--watch", "0.2", "--json"]
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TTY_COMPATIBLE": "1"})
    stop_traffic = threading.Event()
    traffic = threading.Thread(target=post_until, args=(port, stop_traffic))
    hung = threading.Timer(30, watch.kill)  # a watch printing no documents fails instead of hanging
    traffic.start()
    hung.start()
    try:
        documents, text = [], ""
        for line in watch.stdout:  # type: ignore[union-attr]
            text += line
            if line == "}\n":  # one indented JSON document per refresh
                documents.append(json.loads(text))
                text = ""
                if len(documents) == 4:
                    break
    finally:
        stop_traffic.set()
        traffic.join()
        hung.cancel()
        watch.send_signal(signal.SIGINT)
        rest, stderr = watch.communicate(timeout=10)
    assert watch.returncode == 0, stderr
    assert len(documents) == 4
    assert "\x1b" not in text + rest  # no live table drawn around the JSON
    for document in documents:
        assert document["node"]["port"] == port
        assert set(document["rates"]) == {"gateway", "parse", "enrich", "reply"}
        assert set(document["rates"]["parse"]) == {"descriptors_in", "descriptors_out", "payload_bytes",
                                                   "handler_errors", "calls"}
    assert any(document["rates"]["parse"]["descriptors_in"] > 0 for document in documents)


def post_until(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo", data=b"hello", timeout=10) as response:
            response.read()


def test_stats_table_stays_readable_in_80_columns() -> None:
    """Big counters abbreviated, nothing cut to an ellipsis, every name whole."""
    names = ["gateway", "frontend", "productcatalog", "currency", "recommendation"]
    functions: list[dict[str, Any]] = [
        {"id": i, "name": name, "domain": "payments" if i == 4 else "shop", "descriptors_in": 24_300_000,
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


def test_node_file_reads_back_what_it_wrote_and_names_what_is_wrong(tmp_path: Path) -> None:
    node = NodeFile(pid=1, app="echo", app_ref="examples.echo:app", host="127.0.0.1", port=8080, transport="unix",
                    transport_info={}, workers={"parse": 2}, shm=["pool", "counters"],
                    metrics=CounterSegment({"counters": [0, 1, 2, 3]}, 4, ROW_WORDS, list(COLUMNS)), domains=["echo"],
                    functions=[{"id": 1, "name": "parse", "domain": "echo"}], routes=[])
    node.write(tmp_path)
    path = tmp_path / "node.json"
    assert NodeFile.read(path) == node and [p.name for p in tmp_path.iterdir()] == ["node.json"]
    written = json.loads(path.read_text())
    broken = [({k: v for k, v in written.items() if k != "port"}, "field 'port' is missing"),
              ({**written, "port": "8080"}, "field 'port' should be int, not str"),
              ({**written, "workers": True}, "field 'workers' should be dict[str, int], not bool"),
              ({**written, "metrics": {**written["metrics"], "rows": None}}, "field 'metrics.rows' should be int"),
              ({**written, "metrics": []}, "metrics is not a JSON object"),
              ([written], "the file is not a JSON object")]
    for data, message in broken:
        path.write_text(json.dumps(data))
        with pytest.raises(BadNodeFile, match=re.escape(message)) as error:
            NodeFile.read(path)
        assert str(error.value).startswith(f"{path}: ")
    path.write_text("{")
    with pytest.raises(BadNodeFile, match="not JSON"):
        NodeFile.read(path)


def test_compact_numbers() -> None:
    assert [compact(n) for n in (0, 7, 999, 9999, 10_000, 24_300, 123_456, 1_234_567, 5e9, 2.5)] == [
        "0", "7", "999", "9999", "10.0k", "24.3k", "123k", "1.2M", "5.0G", "2.5"]
    # what would round up to the next width takes the next unit: never 100.0k nor 1000k
    assert [compact(n) for n in (99.96, 9999.6, 99_960, 999_600, -24_300)] == ["100", "10.0k", "100k", "1.0M",
                                                                                "-24.3k"]


SERVING = ["uvloop", "httptools", "spright.front.gateway", "spright.worker.runtime", "spright.front.http",
           "spright.node.supervisor", "spright.node.process"]


def serving_modules_after(script: str) -> list[str]:
    """Run ``script`` in a fresh interpreter; the serving side's modules it left imported."""
    result = subprocess.run([sys.executable, "-c", f"{script}\nimport sys\nprint([m for m in {SERVING!r} "
                             "if m in sys.modules])"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_importing_the_cli_imports_nothing_of_the_serving_side() -> None:
    assert serving_modules_after("import spright.ops.cli") == []


def test_the_read_only_commands_import_nothing_of_the_serving_side(echo_node) -> None:
    """spright stats, routes and doctor start fast: no uvloop, httptools, gateway, worker or
    supervisor, even while reading a live node's counters and data plane."""
    port, *_ = echo_node
    commands = [["stats", "--json", "--port", str(port)], ["stats", "--port", str(port)],
                ["routes", "--live", "--port", str(port)], ["routes", "examples.echo"], ["doctor"]]
    script = ("from typer.testing import CliRunner\nimport spright.ops.cli\n"
              f"for args in {commands!r}:\n"
              "    result = CliRunner().invoke(spright.ops.cli.cli, args)\n"
              "    assert result.exit_code == 0, (args, result.output, result.exception)")
    assert serving_modules_after(script) == []


@pytest.mark.node
def test_run_keeps_the_apps_config_for_what_its_options_do_not_say(runtime_dir: Path) -> None:
    """`spright run` used to pass its own defaults (port 8080, transport auto...) over the app's
    Config; an option now overrides only when given."""
    wanted = free_port()
    with run_node("tests.apps.configured:app", transport=None, port=None,
                  env={"CONFIGURED_PORT": str(wanted)}) as (port, process):
        node = next(NodeFile.read(path) for path in runtime_dir.glob("*/node.json")
                    if NodeFile.read(path).pid == process.pid)
        assert (port, node.transport) == (wanted, "unix")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
            assert answer.read() == b"hello"
    with run_node("tests.apps.configured:app", env={"CONFIGURED_PORT": str(wanted)}) as (port, _):
        assert port != wanted, "a given --port (0 here: the kernel's choice) wins over the app's"


@pytest.mark.parametrize("command", [(), ("routes",), ("stats",), ("deploy",), ("deploy", "k8s")])
def test_help_texts_are_whole_paragraphs_not_the_docstrings_line_breaks(command: tuple[str, ...]) -> None:
    """A docstring's hard line breaks used to show as breaks mid-sentence in `--help`: on a
    terminal wide enough for any paragraph, no line of it may end inside a sentence."""
    result = subprocess.run([sys.executable, "-m", "spright", *command, "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "400", "TERM": "dumb"}, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line.strip(" │╭╮╰╯─") for line in result.stdout.splitlines()]
    texts = [line for line in lines if line and not line.startswith(("-", "*", "Usage:"))]
    broken = [line for line in texts if len(line) > 30 and (line[-1].isalpha() or line[-1] == ",")]
    assert not broken, broken
