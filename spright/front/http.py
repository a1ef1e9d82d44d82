"""HTTP/1.1 front door on uvloop + httptools: keep-alive, pipelining, chunked bodies.

Each parsed request is handed to the ``Gateway`` as soon as it is complete; responses are
written strictly in request order (pipelining), whatever order the chains finish in. At most
``Config.max_pipelined`` requests of one connection are in flight: past that the connection is no
longer read, and requests already read (one read may carry hundreds) wait, parsed, holding
no pool slot, until answers make room.
Bad input is answered and the connection closed; the server keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import cast

import httptools

from spright.data.response import Refused, Response, Streamed, bodiless, body_too_large, error_response
from spright.front.gateway import Gateway
from spright.front.incoming import Held, Incoming, RequestHead
from spright.front.render import render, render_head
from spright.host.counters import REFUSED_CONNECTION


class HttpProtocol(asyncio.Protocol):
    def __init__(self, gateway: Gateway, connections: set[HttpProtocol]) -> None:
        self._gateway = gateway
        self._config = gateway.config
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[_Exchange] = deque()
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: Incoming | Held | None = None
        self._held: deque[tuple[Held, _Exchange]] = deque()  # read while max_pipelined were in flight
        self._max_queued = self._config.max_pipelined
        self._refused: Response | None = None  # answer this and close once the queue drains
        self._lingering_since: float | None = None  # the refusal was sent; reading to discard
        self._paused = False  # max_pipelined in flight: not read
        self._body_paused = False  # a streamed body's function has all it may hold: not read (Upload)
        self._unsent: Incoming | None = None  # a streamed body's request, sent at the end of this read
        self._close_when_drained = False  # a streamed body was cut short: its answer is the last
        self._half_closed = False  # the client shut its side: answer what it sent, then close
        self._writable = True  # False while the transport's buffer is over its high-water mark
        self._last_active = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        if len(self._connections) > self._config.max_connections:  # answered, not left to time out
            self._gateway.metrics.refused[REFUSED_CONNECTION] += 1
            self._refuse(error_response(503, f"the node has {self._config.max_connections} connections open: "
                                             "try again later"))
            return
        first_check = min(self._config.keepalive_timeout, self._config.request_timeout)
        self._idle_timer = asyncio.get_running_loop().call_later(first_check, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._body is not None:
            self._body.release()
        self._body = self._unsent = None
        self._transport = None  # responses still in flight are dropped when they arrive
        for exchange in self._queue:  # a streamed answer going out (or come already) has no reader now
            if exchange.response is not None and exchange.response.stream is not None:
                exchange.response.stream.cancel()

    def pause_writing(self) -> None:
        self._writable = False  # a streamed answer's parts wait, and its producer with them

    def resume_writing(self) -> None:
        self._writable = True
        queue = self._queue
        if queue and queue[0].streaming:
            queue[0].resume()

    def eof_received(self) -> bool:
        """The client shut its writing side (a half-close; RFC 9112 §9.6: it may still read).
        The requests it completed are answered, then the connection closes; one it cut short
        can never complete and is dropped."""
        self._half_closed = True
        if self._body is not None:
            self._body.release()
            self._body = self._unsent = None
        return bool(self._queue)  # True keeps the transport open for the answers still due

    def data_received(self, data: bytes) -> None:
        self._last_active = time.monotonic()
        if self._refused is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(error_response(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self._refusing():  # unless a callback refused it (413, 414, 431) with its own answer
                self._refuse(error_response(400, f"malformed HTTP request: {exc}"))
        if self._unsent is not None:  # a streamed body's request leaves with what this read brought
            self._enqueue(self._unsent)

    def _refusing(self) -> bool:
        """A refusal is set. A call, not ``self._refused is None`` inline: after the early return
        above, mypy (so the compiled code) would take the attribute for None still, though the
        parser's callbacks set it meanwhile."""
        return self._refused is not None

    def is_idle(self) -> bool:
        return not self._queue and self._body is None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _refuse(self, response: Response) -> None:
        """Count the HTTP layer's own refusal (400, 408, 414, 431), then ``_close_with`` it."""
        self._gateway.metrics.answered(response.status)
        self._close_with(response)

    def _close_with(self, response: Response) -> None:
        """Answer with ``response`` after the responses already queued, then close. A streamed
        body's request that left already gets ``response`` as its own answer."""
        body, self._body, self._unsent = self._body, None, None
        if isinstance(body, Incoming) and body.upload is not None and body.upload.started:
            body.upload.cut(response)  # answered so, unless its answer came already
            self._close_when_drained = True
        elif body is not None:
            body.release()
        self._refused = response
        self._flush()

    # -- parser callbacks (state is reset when a message completes, saving a callback) ------
    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._config.max_url:
            self._refuse(error_response(414, f"URL over the limit of {self._config.max_url} bytes"))
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._config.max_header_bytes:
            message = f"request headers over the limit of {self._config.max_header_bytes} bytes"
            self._refuse(error_response(431, message))
            raise httptools.HttpParserError("headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        joint = "; " if key == "cookie" else ", "  # RFC 9113 §8.2.3: Cookie lines are one list, joined by "; "
        self._headers[key] = f"{self._headers[key]}{joint}{text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        host = self._headers.get("host")
        if (host is None and self._parser.get_http_version() != "1.0") or (host is not None and "," in host):
            # RFC 9112 §3.2: exactly one Host header in HTTP/1.1 (a repeated one arrives joined by ", ")
            problem = "missing Host header" if host is None else "more than one Host header (or a list in one)"
            self._refuse(error_response(400, problem))
            raise httptools.HttpParserError(problem)
        length = self._headers.get("content-length", "0")
        expected = int(length) if length.isdigit() else 0
        url = self._url
        if url[:1] == b"/":  # origin-form, nearly always: no need for the full URL parser
            path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"/", parsed.query or b""
        head = RequestHead(self._parser.get_method().decode(), path.decode("latin-1"), query.decode("latin-1"),
                           self._headers)
        if len(self._queue) >= self._max_queued:  # room comes when answers drain (_flush)
            if expected > self._gateway.max_body:
                self._close_with(self._gateway.refusal(body_too_large(self._gateway.max_body)).response)
                raise httptools.HttpParserError("request refused")
            self._body = Held(head, self._gateway)
            return
        try:
            self._body = request = self._gateway.open_request(head, expected)
        except Refused as refusal:
            self._close_with(refusal.response)
            raise httptools.HttpParserError("request refused") from None
        if request.upload is not None:  # its first function reads the body as it arrives
            request.upload.reader = self
            self._unsent = request
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        try:
            self._body.write(chunk)  # type: ignore[union-attr]
        except Refused as refusal:
            self._body = None  # the writer let go of its slot
            self._close_with(refusal.response)
            raise httptools.HttpParserError("request refused") from None

    def on_message_complete(self) -> None:
        request = self._body
        self._body, self._url, self._headers, self._header_bytes = None, b"", {}, 0
        assert request is not None  # opened when its headers completed
        if isinstance(request, Incoming) and request.upload is not None:
            request.complete()
            if request is not self._unsent:
                return  # it left with its first bytes: its place in the order is taken
        self._enqueue(request)

    def _enqueue(self, request: Incoming | Held) -> None:
        """``request``'s place in the response order, and on to its chain."""
        if request is self._unsent:
            self._unsent = None
        exchange = _Exchange(self, self._parser.should_keep_alive(), request.method == "HEAD")
        self._queue.append(exchange)
        if len(self._queue) >= self._max_queued and not self._paused and self._transport is not None:
            self._paused = True
            if not self._body_paused:
                self._transport.pause_reading()
        if isinstance(request, Held):
            self._held.append((request, exchange))
        else:
            self._gateway.submit(request, exchange.done)

    def _submit_held(self) -> None:
        """Requests read while the connection had its fill in flight, as room comes."""
        held, gateway = self._held, self._gateway
        while held and len(self._queue) - len(held) < self._max_queued:
            waiting, exchange = held.popleft()
            try:
                request = gateway.open_request(waiting.head, len(waiting.body))
                request.write(waiting.body)
                request.complete()
            except Refused as refusal:  # 503: the pool is full
                exchange.done(refusal.response)
                continue
            gateway.submit(request, exchange.done)

    # -- responses, in order -----------------------------------------------------------------
    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        queue = self._queue
        while queue and queue[0].response is not None:
            exchange = queue[0]
            response = exchange.response
            assert response is not None
            if response.stream is not None:
                if exchange.streaming:
                    return  # its parts are going out: its end flushes what follows
                if not exchange.head_only and not bodiless(response.status):
                    self._start_stream(exchange, response, response.stream)
                    return
                response.stream.cancel(complete=True)  # a HEAD, a 204 or a 304: nobody reads the parts
                if exchange.head_only:  # the GET's head: chunked, but never to an HTTP/1.0 client (RFC 9112 §6.1)
                    queue.popleft()
                    chunked = self._parser.get_http_version() != "1.0"
                    transport.write(render_head(response, exchange.keep_alive and chunked, chunked))
                    exchange.keep_alive = exchange.keep_alive and chunked
                    if not exchange.keep_alive or (self._half_closed and not queue):
                        transport.close()
                        return
                    continue
            queue.popleft()
            transport.write(render(response, exchange.keep_alive, exchange.head_only))
            if not exchange.keep_alive or (self._half_closed and not queue):
                transport.close()
                return
        self._submit_held()
        if self._paused and not self._held and len(queue) < self._max_queued // 2:
            self._paused = False
            if not self._body_paused:
                transport.resume_reading()
        if not queue and self._close_when_drained:
            transport.close()
            return
        if not queue and self._refused is not None and self._lingering_since is None:
            transport.write(render(self._refused, keep_alive=False))
            if transport.can_write_eof():
                transport.write_eof()
            self._lingering_since = time.monotonic()
            asyncio.get_running_loop().call_later(self._config.linger_pause, self._linger)

    def _start_stream(self, exchange: _Exchange, response: Response, stream: Streamed) -> None:
        """The head of a streamed answer, then its parts as they come (``exchange`` is their sink)."""
        transport = self._transport
        assert transport is not None
        exchange.streaming = True
        exchange.chunked = self._parser.get_http_version() != "1.0"  # an HTTP/1.0 client reads to the close
        exchange.keep_alive = exchange.keep_alive and exchange.chunked
        transport.write(render_head(response, exchange.keep_alive, exchange.chunked))
        stream.attach(exchange)

    def _stream_over(self, exchange: _Exchange) -> None:
        """``exchange``'s streamed answer is complete: on to the next response."""
        transport = self._transport
        if not self._queue or self._queue[0] is not exchange or transport is None:
            return
        self._queue.popleft()
        if exchange.chunked:
            transport.write(b"0\r\n\r\n")
        if not exchange.keep_alive or (self._half_closed and not self._queue):
            transport.close()
            return
        self._flush()

    # -- a streamed body's flow control (spright.front.uploads.Reader) --------------------------
    def pause_body(self) -> None:
        self._body_paused = True
        if self._transport is not None and not self._paused:
            self._transport.pause_reading()

    def resume_body(self) -> None:
        self._body_paused = False
        self._last_active = time.monotonic()  # the wait was the function's, not the client's
        if self._transport is not None and not self._paused:
            self._transport.resume_reading()

    def _linger(self) -> None:
        transport, now, config = self._transport, time.monotonic(), self._config
        if transport is None or transport.is_closing():
            return
        assert self._lingering_since is not None
        if now - self._last_active >= config.linger_pause or now - self._lingering_since >= config.linger_max:
            transport.close()
        else:
            asyncio.get_running_loop().call_later(config.linger_pause, self._linger)

    def _reading(self) -> bool:
        """A request's headers or body are arriving (not yet complete)."""
        return self._body is not None or bool(self._url) or self._header_bytes > 0

    def _check_idle(self) -> None:
        """Close a keep-alive connection idle for ``keepalive_timeout``, and answer 408 to a
        request whose headers or body stalled for ``request_timeout`` (its slot comes back);
        one timer per period, not one per request (timers are costly on the hot path)."""
        config = self._config
        idle_for = time.monotonic() - self._last_active
        if self._refused is None and self._reading() and not self._body_paused:  # (not the client's stall)
            if idle_for >= config.request_timeout:
                self._refuse(error_response(408, f"the request made no progress for {config.request_timeout:g} s"))
                return
            delay = config.request_timeout - idle_for
        elif self.is_idle():
            if idle_for >= config.keepalive_timeout:
                self.close()
                return
            delay = config.keepalive_timeout - idle_for
        else:  # waiting for its chains: their own timeouts answer
            delay = min(config.keepalive_timeout, config.request_timeout)
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._check_idle)


class _Exchange:
    """One request's place in its connection's response order; the sink of its answer's parts
    when that is streamed (spright.data.response.PartSink)."""

    __slots__ = ("chunked", "head_only", "keep_alive", "protocol", "response", "streaming")

    def __init__(self, protocol: HttpProtocol, keep_alive: bool, head_only: bool) -> None:
        self.protocol = protocol
        self.keep_alive = keep_alive
        self.head_only = head_only
        self.response: Response | None = None
        self.streaming = False  # its streamed answer's head is out, its parts going out
        self.chunked = True

    def done(self, response: Response) -> None:
        self.response = response
        if response.stream is not None and self.protocol._transport is None:
            response.stream.cancel()  # the client is gone already
        self.protocol._flush()

    def resume(self) -> None:
        assert self.response is not None and self.response.stream is not None
        self.response.stream.resume()

    # -- PartSink --------------------------------------------------------------------------
    def write(self, part: bytes) -> None:
        transport = self.protocol._transport
        if transport is None:
            return  # gone: connection_lost cancels the stream
        if self.chunked:
            transport.writelines((b"%x\r\n" % len(part), part, b"\r\n"))
        else:
            transport.write(part)

    def end(self) -> None:
        self.protocol._stream_over(self)

    def abort(self) -> None:
        """Cut short: the connection closes without the last chunk (what the client can tell)."""
        self.protocol.close()

    def writable(self) -> bool:
        return self.protocol._writable and self.protocol._transport is not None
