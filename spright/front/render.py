"""An answer as HTTP/1.1 puts it on the wire: status line, headers and the framing the server
owns (Content-Length, or chunked for a streamed answer; Connection: close), RFC 9110/9112."""

from __future__ import annotations

from http import HTTPStatus

from spright.data.response import Response, bodiless

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_STATUS_LINES = {status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in _REASONS.items()}
_HEADER_LINE = b"%s: %s\r\n"


def render(response: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    """Status line, headers, body. RFC 9110 framing: a HEAD answer gets the GET's headers and
    no body; a 1xx, 204 or 304 answer has no body and no Content-Length (what a handler
    returned with one is dropped), so the next response on the connection still parses."""
    status = response.status
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
    body = response.body
    if bodiless(status):
        tail, body = (b"\r\n" if keep_alive else b"connection: close\r\n\r\n"), b""
    else:
        tail = (b"content-length: %d\r\n\r\n" if keep_alive else
                b"content-length: %d\r\nconnection: close\r\n\r\n") % len(body)
    return b"".join((
        line,
        *map(_HEADER_LINE.__mod__, response.raw_headers),
        tail,
        b"" if head_only else body,
    ))


def render_head(response: Response, keep_alive: bool, chunked: bool) -> bytes:
    """Status line and headers of a streamed answer (spright.front.streams): its body follows
    in chunks, or, to an HTTP/1.0 client, as it comes until the connection closes."""
    status = response.status
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
    framing = b"transfer-encoding: chunked\r\n" if chunked else b""
    return b"".join((line, *map(_HEADER_LINE.__mod__, response.raw_headers), framing,
                     b"\r\n" if keep_alive and chunked else b"connection: close\r\n\r\n"))
