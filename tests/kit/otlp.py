"""A real OTLP/HTTP trace receiver on 127.0.0.1: what a collector gets, decoded with
OpenTelemetry's own protobuf classes (so a test checks the bytes an exporter sent, not the
objects it meant to send).

    with Receiver() as receiver:
        ... export to receiver.endpoint ...
        spans = receiver.wait_for(3, timeout=10)
"""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
_DECODERS = {"": bytes, "identity": bytes, "gzip": gzip.decompress, "deflate": zlib.decompress}


@dataclass(frozen=True)
class Received:
    """One span as the collector got it, with its resource's and scope's names."""

    span: Span
    resource: dict[str, Any]
    scope: str

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP key-values as a plain dict (ints as int: protobuf's JSON form would give strings)."""
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which in ("string_value", "int_value", "bool_value", "double_value") \
        else MessageToDict(value)


class Receiver:
    """Accepts ``POST /v1/traces`` with a protobuf body, answers as a collector does, keeps every
    span. A request it cannot take (another path or content type, an undecodable body) is
    answered 4xx and kept in ``refused``, so a test can say none was."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.refused: list[str] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # a short poll: stop() waits for serve_forever to look (half a second by default)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="otlp-receiver",
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """The spans once at least ``count`` arrived; AssertionError saying what came instead if
        they have not within ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.spans) >= count, timeout):
                names = [received.span.name for received in self.spans]
                raise AssertionError(f"{count} spans expected within {timeout:g} s, got {names}; "
                                     f"refused {self.refused}")
            return list(self.spans)

    def _take(self, request: ExportTraceServiceRequest) -> None:
        with self._changed:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [Received(span, resource, scope_spans.scope.name) for span in scope_spans.spans]
            self._changed.notify_all()

    def _refuse(self, reason: str) -> None:
        with self._changed:
            self.refused.append(reason)
            self._changed.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                content_type = self.headers.get("Content-Type", "")
                decode = _DECODERS.get(self.headers.get("Content-Encoding", ""))
                if self.path != PATH or content_type != PROTOBUF or decode is None:
                    receiver._refuse(f"{self.path} {content_type} {self.headers.get('Content-Encoding')}")
                    self._answer(404 if self.path != PATH else 415, b"")
                    return
                request = ExportTraceServiceRequest()
                try:
                    request.ParseFromString(decode(body))
                except Exception as error:  # a body that is not the message: the exporter's bug, shown
                    receiver._refuse(f"undecodable body: {error!r}")
                    self._answer(400, b"")
                    return
                receiver._take(request)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", PROTOBUF)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
                pass

        return Handler

