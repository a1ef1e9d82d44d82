"""bench.tailgen's code paths (not its timing): every scheduled request is sent once and
answered, late sends and connections opened mid-run are counted, the probe runs; bench.tail's
figures are in docs/performance.md."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import uvloop

from bench import tailgen
from bench.raw_server import HelloProtocol


def test_request_bytes_carry_the_body_and_its_length() -> None:
    request = tailgen.build_request("127.0.0.1", 8000, "POST", "/echo", b"x" * 3)
    assert request == (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/octet-stream\r\n"
                       b"Content-Length: 3\r\n\r\nxxx")
    assert tailgen.build_request("h", 1, "GET", "/", None).endswith(b"\r\n\r\n")


def test_percentiles_at_the_tail_ranks() -> None:
    figures = tailgen.percentiles([i * 1_000_000 for i in range(1, 1001)])  # 1..1000 ms
    assert (figures["p50_ms"], figures["p99_ms"], figures["p99.9_ms"], figures["max_ms"]) == (501, 991, 1000, 1000)
    assert tailgen.percentiles([]) == {"count": 0}


class _Slow(HelloProtocol):
    """Answers 20 ms late, so requests due meanwhile find every connection busy."""

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().call_later(0.02, super().on_message_complete)


async def _against(protocol: type[asyncio.Protocol], rate: float, connections: int) -> dict[str, object]:
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await tailgen.generate(f"http://127.0.0.1:{port}", "POST", "/", b"x" * 64, rate, 0.5,
                                      connections=connections, grace=5)


def test_every_scheduled_request_is_answered_and_accounted() -> None:
    out = uvloop.run(_against(HelloProtocol, 400, 4))
    assert out["scheduled"] == out["sent"] == out["requests"] == 199  # 0.5 s at 400/s, the first due at 1/400
    assert (out["errors"], out["unfinished"], out["statuses"]) == (0, 0, {"200": 199})
    for figure in ("latency", "send_lag", "service"):
        assert out[figure]["count"] == 199  # type: ignore[index]
    assert out["late_sends"] <= out["sent"]  # type: ignore[operator]


def test_a_request_finding_no_idle_connection_opens_one() -> None:
    out = uvloop.run(_against(_Slow, 400, 1))
    assert out["requests"] == 199 and out["errors"] == 0
    assert out["connects_in_run"] and out["connections"] == 1 + out["connects_in_run"]  # type: ignore[operator]


def test_a_server_that_goes_away_is_counted_as_errors() -> None:
    class Closing(HelloProtocol):
        def on_message_complete(self) -> None:
            assert self.transport is not None
            self.transport.close()

    out = uvloop.run(_against(Closing, 200, 2))
    assert out["requests"] == 0 and out["errors"] == out["sent"] and out["error_samples"]


@pytest.mark.slow
def test_floor_probe_and_command_line_print_json() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.tailgen", "-", "--floor", "--rate", "1000", "--duration",
                           "0.05"], capture_output=True, text=True, check=True, timeout=60)
    probe = json.loads(done.stdout)
    assert probe["wakeups"] == 50 and probe["lag"]["count"] == 50
