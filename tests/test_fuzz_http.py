"""The HTTP front under hypothesis: request lines, header names and values, chunked framing,
pipelining, absurd Content-Length and smuggling attempts (Content-Length with
Transfer-Encoding). Whatever arrives, the node answers with a well-formed HTTP response or
closes the connection (never hangs), never crashes, serves the next client, and holds no
slot once each exchange is over.

A few hundred examples run in ``make test``; ``make fuzz`` runs many more
(``SPRIGHT_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spright.testing import node_metric, run_node
from tests.kit.wire import exchange

pytestmark = pytest.mark.node
EXAMPLES = int(os.environ.get("SPRIGHT_FUZZ_EXAMPLES", "150"))
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] [1-5][0-9][0-9] ")

token = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz-_ABCXYZ0123456789"), min_size=1, max_size=12)
anything = st.binary(max_size=64)
header_value = st.one_of(st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")), anything)
length = st.one_of(st.integers(-5, 1 << 40).map(lambda n: str(n).encode()), st.sampled_from(
    [b"", b"abc", b"1,2", b" 5", b"0x10", b"99999999999999999999999", b"+3"]))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.one_of(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS"]),
                            token.map(str.encode), anything))
    target = draw(st.one_of(st.sampled_from([b"/echo", b"/", b"/echo?x=1", b"*", b"http://x/echo"]),
                            anything.map(lambda b: b"/" + b)))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""]))
    headers = [(b"Host", b"x")] if draw(st.booleans()) else []
    headers += draw(st.lists(st.tuples(st.one_of(token.map(str.encode), anything), header_value), max_size=6))
    if draw(st.booleans()):
        headers.append((b"Content-Length", draw(length)))
    if draw(st.booleans()):
        headers.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"gzip, chunked", b"identity",
                                                                   b"chunked, chunked", b" chunked"]))))
    body = draw(st.one_of(anything, st.builds(
        lambda sizes, tail: b"".join(b"%x\r\n%s\r\n" % (n, b"y" * n) for n in sizes) + tail,
        st.lists(st.integers(0, 40), max_size=4), st.sampled_from([b"0\r\n\r\n", b"", b"zz\r\n", b"0\r\n"]))))
    head = b"%s %s %s\r\n" % (method, target, version) + b"".join(b"%s: %s\r\n" % h for h in headers)
    return head + b"\r\n" + body


@pytest.fixture(scope="module")
def fuzz_node(runtime_dir: Path) -> Iterator[int]:
    """(Its runtime base is the module's: set for it, and restored after, by the fixture.)"""
    with run_node("tests.apps.slow:app") as (port, process):
        yield port
        assert process.poll() is None, "the node survived the fuzzing"


class Responses:
    """httptools' response parser over everything the node sent: each message whole and well
    formed (status line, headers, the body its framing announces), none cut short."""

    def __init__(self, answer: bytes) -> None:
        self.final = 0  # complete responses other than 1xx
        self.cut = False  # a response begun and not complete
        self._parser = httptools.HttpResponseParser(self)
        try:
            self._parser.feed_data(answer)
        except httptools.HttpParserError as exc:
            pytest.fail(f"a malformed response ({exc}): {answer[:200]!r}")

    def on_message_begin(self) -> None:
        self.cut = True

    def on_message_complete(self) -> None:
        self.cut = False
        self.final += self._parser.get_status_code() >= 200


def normal_request_works(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/echo", b"still here")
    reply = connection.getresponse()
    assert (reply.status, reply.read()) == (200, b"still here")
    connection.close()


def no_slot_held(port: int) -> None:
    """Every slot this example's requests took comes back (a body cut short is released when
    its connection ends, which the node sees just after the client does)."""
    deadline = time.monotonic() + 30
    while (held := node_metric(port, "spright_pool_slots_in_use")) != 0:
        assert time.monotonic() < deadline, f"{held:g} slots still held 30 s after the exchange"
        time.sleep(0.05)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(requests(), min_size=1, max_size=3))
def test_any_request_gets_an_answer_or_a_close_and_the_node_stays_up(fuzz_node: int, pipelined: list[bytes]) -> None:
    answer = exchange(fuzz_node, b"".join(pipelined), reset_is_close=True)
    if answer:
        assert STATUS_LINE.match(answer), answer[:120]
        if not any(request.startswith(b"HEAD") for request in pipelined):  # a HEAD answer's length has no body
            parsed = Responses(answer)
            assert not parsed.cut, f"a response cut short: {answer[:300]!r}"
            # bytes past a request's framing start another request: at most one more answer (a 400, then the close)
            most = len(pipelined) + 1
            assert 1 <= parsed.final <= most, f"{parsed.final} answers to {len(pipelined)}: {answer[:300]!r}"
    normal_request_works(fuzz_node)
    no_slot_held(fuzz_node)
