"""The HTTP front door's promises, on a real node over real sockets, byte by byte: 100-continue,
the URL limit, chunked bodies that outgrow their slot or the body limit, ``{rest:path}``.

Raw sockets (not an HTTP client) so that the test, not a library, decides what is sent when.
The node serves tests/apps/demo.py: ``POST /echo`` answers the body upper-cased plus "!!",
``POST /tag`` the body exactly as sent plus "!".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from spright.testing import run_node
from tests.apps.demo import app as demo
from tests.kit.wire import Connection

pytestmark = pytest.mark.node

MAX_BODY = demo.config.max_body  # what `spright run` serves the demo with: its PoolConfig's
MAX_URL = demo.config.max_url  # the HTTP limit (the default: the demo sets none)
SLOT_CLASSES = [size for size, _ in demo.config.pool.classes]


@pytest.fixture(scope="module")
def port(transport: str) -> Iterator[int]:
    with run_node("tests.apps.demo:app", transport=transport) as (port, _):
        yield port


def chunked(body: bytes, size: int) -> Iterator[bytes]:
    """``body`` as Transfer-Encoding: chunked pieces of ``size`` bytes, then the last chunk."""
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


TAG_CHUNKED = b"POST /tag HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_expect_100_continue_invites_the_body_before_it_is_sent(port: int) -> None:
    """Catches: no interim response (a client that waits for it stalls, then sends anyway, late),
    a 100 sent after the final response, a body not read after the 100."""
    body = b"sent only when invited"
    with Connection(port) as http:
        http.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert http.head() == (100, {}), "the server must invite the body (we have not sent it)"
        assert http.buffer == b""
        http.send(body)
        assert http.response()[::2] == (200, b"SENT ONLY WHEN INVITED!!")
        # the connection stays usable: a second request with the same expectation
        http.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert http.head()[0] == 100
        http.send(b"ok")
        assert http.response()[::2] == (200, b"OK!!")


def test_expect_100_continue_over_the_body_limit_is_413_without_inviting_the_body(port: int) -> None:
    """Catches: a 100 Continue sent before the limit is checked (the client would upload
    megabytes only to have them refused)."""
    with Connection(port) as http:
        http.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                  % (MAX_BODY + 1))
        status, headers, body = http.response()
    assert status == 413 and headers.get("connection") == "close"
    assert json.loads(body)["error"] == f"request body over the limit of {MAX_BODY} bytes"


def test_url_over_the_limit_is_414_and_one_at_the_limit_is_served(port: int) -> None:
    """Catches: no limit (the URL buffered without bound), an off-by-one at the limit, a 400
    or a dropped connection instead of 414."""
    at_limit = b"/info/" + b"a" * (MAX_URL - len(b"/info/"))
    assert len(at_limit) == MAX_URL
    with Connection(port) as http:
        http.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % at_limit)
        status, _, body = http.response()
        assert status == 200 and json.loads(body)["params"] == {"item": "a" * (MAX_URL - 6)}
        http.send(b"GET %sa HTTP/1.1\r\nHost: x\r\n\r\n" % at_limit)
        status, headers, body = http.response()
    assert status == 414 and headers.get("connection") == "close"
    assert f"{MAX_URL} bytes" in json.loads(body)["error"]


def test_chunked_body_that_outgrows_its_slot_classes_is_echoed_exactly(port: int) -> None:
    """200 KiB in 8 KiB chunks: the body starts in a 4 KiB slot (no Content-Length to size it)
    and must move to larger ones as it grows. Catches: bytes lost or duplicated at a move,
    a body cut at a slot size, a refusal of a body well under the limit."""
    body = os.urandom(200 * 1024)
    assert SLOT_CLASSES[0] < SLOT_CLASSES[1] < len(body) < MAX_BODY, "it must outgrow two classes"
    with Connection(port) as http:
        http.send(TAG_CHUNKED)
        for piece in chunked(body, 8 * 1024):
            http.send(piece)
        status, _, echoed = http.response()
        assert status == 200 and len(echoed) == len(body) + 1
        assert echoed == body + b"!"
        http.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nafter")  # same connection
        assert http.response()[::2] == (200, b"AFTER!!")


def test_chunked_body_at_the_limit_is_served_and_one_byte_more_is_413(port: int) -> None:
    """No Content-Length announces a chunked body's size: the limit must hold as it arrives.
    Catches: a chunked body let through past max_body (or refused at it), a connection
    dropped without the 413."""
    body = os.urandom(MAX_BODY)
    with Connection(port) as http:
        http.send(TAG_CHUNKED)
        for piece in chunked(body, 64 * 1024):
            http.send(piece)
        status, _, echoed = http.response()
        assert status == 200 and echoed == body + b"!"

    with Connection(port) as http:
        http.send(TAG_CHUNKED)
        try:
            for piece in chunked(body + b"y", 64 * 1024):  # refused while it arrives: stop sending
                http.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, answer = http.response()
    assert status == 413 and headers.get("connection") == "close"
    assert json.loads(answer)["error"] == f"request body over the limit of {MAX_BODY} bytes"


def test_a_rest_of_path_parameter_reaches_the_handler(port: int) -> None:
    """``/files/{rest:path}``: the whole remainder, slashes included. Catches: the parameter
    cut at the first slash (or a 404 for it), the prefix left in it, an empty remainder
    matched."""
    with Connection(port) as http:
        for rest in ("report.txt", "docs/2024/q3/report.txt"):
            http.send(b"GET /files/%s?v=2 HTTP/1.1\r\nHost: x\r\n\r\n" % rest.encode())
            status, _, body = http.response()
            assert status == 200, body
            seen = json.loads(body)
            assert (seen["params"], seen["path"], seen["query"]) == ({"rest": rest}, f"/files/{rest}", {"v": "2"})
        http.send(b"GET /files/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert http.response()[0] == 404


def test_a_request_without_host_or_with_two_is_400_and_the_connection_closes(port: int) -> None:
    """RFC 9112 §3.2; before it, the request with no Host and a declared body waited for that body."""
    for request in (b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                    b"POST /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 5\r\n\r\nhello"):
        with Connection(port) as http:
            http.send(request)
            status, headers, body = http.response()
            assert status == 400 and headers.get("connection") == "close", (request, status, headers)
            assert b"Host" in body
            assert http.closed_by_server(), "the connection is closed after the 400"
    with Connection(port) as http:  # HTTP/1.0 needs no Host
        http.send(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nok")
        assert http.response()[::2] == (200, b"OK!!")


def test_204_304_and_head_answers_carry_no_body_and_the_next_request_on_the_connection_parses(port: int) -> None:
    """RFC 9110 §6.4.1 and §9.3.2: the handler returned a body with its 204/304 and the GET of
    a HEAD has one; none of them may reach the wire, or the next answer is read from the middle
    of it (before: ``content-length: 11`` and the JSON after a 204). A 204 or 304 also carries
    no Content-Length; a HEAD answer carries the GET's."""
    with Connection(port) as http:
        for code in (204, 304):
            http.send(b"GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\n" % code)
            status, headers, _ = http.response(bodiless=True)
            assert status == code and "content-length" not in headers, headers
        http.send(b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = http.response(bodiless=True)
        assert status == 201 and headers["content-length"] == "50007" and headers["x-page"] == "yes"
        http.send(b"POST /tag HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nnext")
        assert http.response()[::2] == (200, b"next!"), "the answer after them parses from its first byte"


def test_paths_are_percent_decoded_before_routing_and_for_the_handler(port: int) -> None:
    with Connection(port) as http:
        for target, item in ((b"/info/h%C3%A9llo", "h\u00e9llo"), (b"/info/a%20b", "a b"), (b"/%69nfo/x", "x")):
            http.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
            status, _, body = http.response()
            assert status == 200, (target, body)
            assert (json.loads(body)["params"], json.loads(body)["path"]) == ({"item": item}, f"/info/{item}")
        http.send(b"GET /files/a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(http.response()[2])["params"] == {"rest": "a/b"}


def test_response_headers_accumulate_along_the_chain_on_the_wire(port: int) -> None:
    """``first >> second`` (tests/apps/demo.py): the first hop's headers survive the second's,
    a name the second sets again replaces the first's, Set-Cookie lines add up, and the body
    is labelled by the hop that produced it (JSON), not by the first hop's text/html."""
    with Connection(port) as http:
        http.send(b"GET /headers?headers=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, lines = http.head_lines()
        named = [(name.lower(), value) for name, value in lines]
        assert status == 200
        assert [v for n, v in named if n == "content-type"] == ["application/json"]
        assert [v for n, v in named if n == "x-first"] == ["1"]
        assert [v for n, v in named if n == "x-shared"] == ["second"]
        assert [v for n, v in named if n == "set-cookie"] == ["a=1", "b=2"]
        assert [v for n, v in named if n == "content-length"] == [str(len(b'{"second":true}'))]


def test_a_handler_cannot_frame_the_response_and_the_next_request_still_parses(port: int) -> None:
    """``set_header("Content-Type")`` gives one Content-Type line, not two; ``set_header(
    "Content-Length", "999")`` fails the handler (500) instead of sending two lengths that
    disagree, and the connection goes on."""
    with Connection(port) as http:
        for target, status, content_type in ((b"/typed", 200, "text/csv"), (b"/smuggle", 500, "application/json")):
            http.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
            answered, lines = http.head_lines()
            named = [(name.lower(), value) for name, value in lines]
            assert answered == status and [v for n, v in named if n == "content-type"] == [content_type], lines
            lengths = [int(v) for n, v in named if n == "content-length"]
            assert len(lengths) == 1, lines
            while len(http.buffer) < lengths[0]:
                http._fill()
            http.buffer = http.buffer[lengths[0]:]
        http.send(b"POST /tag HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nnext")
        assert http.response()[::2] == (200, b"next!")


def test_two_cookie_headers_are_one_cookie_list(port: int) -> None:
    """RFC 9113 §8.2.3 / RFC 6265 §5.4: repeated Cookie lines join with "; " (not ", ", which
    would fold the second cookie into the first one's value); a quoted value is unquoted."""
    with Connection(port) as http:
        http.send(b'GET /info/x HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: session="s 1"\r\n\r\n')
        status, _, body = http.response()
        assert status == 200, body
        assert json.loads(body)["session"] == "s 1"
