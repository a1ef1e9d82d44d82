"""Tracing end to end: the gateway's choice, the context through every hop and call, the
response's traceparent and Server-Timing, the tail rules, export to a real OTLP/HTTP receiver
and ``spright trace`` on a running node (docs/tracing.md)."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from spright import Config
from spright.data.tracecontext import parse
from spright.data.traces import Span
from spright.ops.traceview import kept_traces
from spright.testing import TestClient, free_port, run_node
from tests.apps.traced import app
from tests.kit.nodes import node_file, spright
from tests.kit.otlp import Receiver

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


async def test_a_sampled_request_carries_its_context_through_every_hop_and_call_and_answers_with_it() -> None:
    async with TestClient(app, config=Config(trace_sample=1.0)) as client:
        response = await client.get("/ok", headers={"traceparent": PARENT})
    assert response.status == 200
    answer = parse(response.headers["traceparent"], None)
    assert answer is not None and answer.sampled
    assert f"{answer.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"  # the caller's trace goes on
    assert answer.parent_id != 0xB7AD6B7169203331  # the gateway's own span, child of the caller's
    body = response.json()
    # what the hops saw: the gateway's span as their parent, in the chain and in the call
    assert body["traceparent"] == body["seen"]["traceparent"] == response.headers["traceparent"]
    timing = response.headers["server-timing"]
    names = [metric.split(";")[0] for metric in timing.split(", ")]
    assert names == ["front", "back", "total"], timing
    assert all(";dur=" in metric for metric in timing.split(", "))


async def test_without_a_traceparent_the_gateway_starts_a_trace() -> None:
    async with TestClient(app, config=Config(trace_sample=1.0)) as client:
        first, second = await client.get("/ok"), await client.get("/ok")
    ids = [parse(r.headers["traceparent"], None) for r in (first, second)]
    assert all(i is not None and i.sampled for i in ids)
    assert ids[0].trace_id != ids[1].trace_id  # type: ignore[union-attr]


@pytest.mark.parametrize("config", [Config(), Config(trace_sample=0.0, otlp="http://127.0.0.1:9/v1/traces")],
                         ids=["tracing off", "rate 0"])
async def test_an_untraced_request_carries_no_trace_headers(config: Config) -> None:
    async with TestClient(app, config=config) as client:
        response = await client.get("/ok", headers={"traceparent": UNSAMPLED})
    assert "traceparent" not in response.headers and "server-timing" not in response.headers
    assert response.json()["traceparent"] == UNSAMPLED  # handed on as it came, untouched


async def test_a_sampled_traceparent_is_honoured_at_rate_zero() -> None:
    async with TestClient(app, config=Config(otlp="http://127.0.0.1:9/v1/traces")) as client:
        response = await client.get("/ok", headers={"traceparent": PARENT})
    assert parse(response.headers["traceparent"], None).sampled  # type: ignore[union-attr]


async def test_the_error_rule_traces_every_request_and_keeps_the_failed_ones() -> None:
    async with TestClient(app, config=Config(trace_errors=True)) as client:
        ok, failed = await client.get("/ok"), await client.get("/fail")
    assert failed.status == 500
    # both recorded (the rule needs the whole request to decide), neither head sampled
    for response in (ok, failed):
        assert not parse(response.headers["traceparent"], None).sampled  # type: ignore[union-attr]
    assert [m.split(";")[0] for m in failed.headers["server-timing"].split(", ")] == ["front", "total"]


def test_a_node_exports_kept_traces_to_an_otlp_collector_and_spright_trace_draws_them() -> None:
    """skmsg, the real node: the spans a collector receives, their parents and ids, the
    resource; then ``spright trace`` on the same node."""
    with Receiver() as receiver, run_node("tests.apps.traced:app", transport="skmsg",
                                          args=("--trace-sample", "1", "--otlp", receiver.endpoint)) as (port, node):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/ok", headers={"traceparent": PARENT})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            traceparent = response.headers["traceparent"]
        spans = receiver.wait_for(5, timeout=30)  # server, front, back, front.call(lookup), lookup
        shown = spright("trace", "--node", str(node.pid))
    by_name = {received.span.name: received.span for received in spans}
    assert set(by_name) == {"GET /ok", "front", "back", "front.call(lookup)", "lookup"}
    server = by_name["GET /ok"]
    answer = parse(traceparent, None)
    assert answer is not None
    assert int.from_bytes(server.span_id, "big") == answer.parent_id  # the id the client was told
    assert int.from_bytes(server.parent_span_id, "big") == 0xB7AD6B7169203331  # the caller's
    assert {span.trace_id.hex() for span in by_name.values()} == {"0af7651916cd43dd8448eb211c80319c"}
    parent_of = {name: span.parent_span_id for name, span in by_name.items()}
    assert parent_of["front"] == parent_of["back"] == server.span_id
    assert parent_of["front.call(lookup)"] == by_name["front"].span_id
    assert parent_of["lookup"] == by_name["front.call(lookup)"].span_id
    assert spans[0].resource["service.name"] == "traced" and spans[0].resource["spright.dataplane"] == "skmsg"
    assert receiver.refused == []
    assert shown.returncode == 0, shown.stderr
    for text in ("0af7651916cd43dd8448eb211c80319c", "GET /ok", "front.call(lookup)", "lookup", "back"):
        assert text in shown.stdout, shown.stdout


async def test_metrics_show_each_functions_queue_wait_and_handler_time_of_traced_runs() -> None:
    async with TestClient(app, config=Config(trace_sample=1.0)) as client:
        for _ in range(3):
            await client.get("/ok")
        text = (await client.get("/metrics")).text
    for function in ("front", "back", "lookup"):
        for family in ("spright_queue_wait_seconds", "spright_handler_run_seconds"):
            assert f'{family}_count{{domain="traced",function="{function}"}} 3.0' in text, (family, function)
    # nothing was lost: no ring overwritten, no trace dropped (no exporter here)
    assert "spright_trace_records_lost_total 0.0" in text and "spright_traces_dropped_total 0.0" in text


def test_every_data_plane_carries_the_trace(transport: str) -> None:
    """The hops and the call of a request on each data plane, as ``spright trace`` reads them."""
    with run_node("tests.apps.traced:app", transport=transport, args=("--trace-sample", "1")) as (port, node):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=30) as response:
            timing = response.headers["server-timing"]
        (trace,) = kept_traces(node_file(node.pid).traces)
    assert [metric.split(";")[0] for metric in timing.split(", ")] == ["front", "back", "total"]
    assert trace.complete
    assert [(depth, span.name) for depth, span in walk(trace.root)] == [
        (0, "GET /ok"), (1, "front"), (2, "front.call(lookup)"), (3, "lookup"), (1, "back")]


def walk(span: Span, depth: int = 0) -> Iterator[tuple[int, Span]]:
    yield depth, span
    for child in sorted(span.children, key=lambda c: c.start_ns):
        yield from walk(child, depth + 1)


@pytest.mark.node
def test_knative_mode_continues_one_trace_across_the_nodes_of_a_request(runtime_dir: Path) -> None:
    """A node per function plus the ingress (what ``spright deploy knative`` runs), every hop an
    HTTP request to another node: each node exports its part, all under the client's trace id,
    and each node's server span hangs from a span of the node that sent it the hop."""
    names = ["front", "back", "lookup"]
    ports = {name: free_port() for name in [*names, "ingress"]}
    urls = {name: f"http://127.0.0.1:{ports[name]}" for name in names}
    with Receiver() as receiver, contextlib.ExitStack() as nodes:
        for name in [*names, "ingress"]:
            others = {other: url for other, url in urls.items() if other != name}
            nodes.enter_context(run_node("tests.apps.traced:app", transport="http", port=ports[name],
                                         args=("--trace-sample", "1", "--otlp", receiver.endpoint),
                                         env={"SPRIGHT_REMOTES": orjson.dumps(others).decode()}))
        request = urllib.request.Request(f"http://127.0.0.1:{ports['ingress']}/ok", headers={"traceparent": PARENT})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        # the ingress: server, front, back (remote hops); front's node: server, front, its call,
        # lookup (the remote hop's run); back's node: server, back; lookup's node: server, lookup
        spans = receiver.wait_for(11, timeout=60)
    assert {received.span.trace_id.hex() for received in spans} == {"0af7651916cd43dd8448eb211c80319c"}
    ids = {received.span.span_id for received in spans}
    servers = [received.span for received in spans if " /" in received.span.name]
    assert sorted(server.name for server in servers) == [
        "GET /ok", "POST /.spright/call/back", "POST /.spright/call/front", "POST /.spright/call/lookup"]
    for server in servers:  # the client's span for the ingress, a span of another node for the rest
        assert server.parent_span_id == bytes.fromhex("b7ad6b7169203331") or server.parent_span_id in ids
    assert sum(server.parent_span_id in ids for server in servers) == 3



def test_the_error_rule_exports_the_failed_request_and_not_the_others() -> None:
    """``--trace-errors`` with no head rate: every request recorded, only the 5xx one exported.
    The OK one goes first: the exporter sends in order, so had it been kept, its spans would
    have come before or with the failed one's."""
    with Receiver() as receiver, run_node("tests.apps.traced:app", transport="unix",
                                          args=("--trace-errors", "--otlp", receiver.endpoint)) as (port, _):
        for path, status in (("/ok", 200), ("/fail", 500)):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
                    assert response.status == status
            except urllib.error.HTTPError as error:
                assert error.code == status
        spans = receiver.wait_for(4, timeout=30)  # server, front, front.call(lookup), lookup
    assert sorted(received.span.name for received in spans) == ["GET /fail", "front", "front.call(lookup)", "lookup"]
    assert len({received.span.trace_id for received in spans}) == 1
