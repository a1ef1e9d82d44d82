"""Tracing end to end: the gateway's choice, the context through every hop and call, the
response's traceparent and Server-Timing, the tail rules, export to a real OTLP/HTTP receiver
and ``spright trace`` on a running node (docs/tracing.md)."""

from __future__ import annotations

import urllib.request

import pytest

from spright import Config
from spright.data.tracecontext import parse
from spright.testing import TestClient, run_node
from tests.apps.traced import app
from tests.kit.nodes import spright
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
