"""A stand-in OTLP/HTTP collector for ``bench.trace``: answers ``POST /v1/traces`` with 200 and
an empty ExportTraceServiceResponse (``b""``, the message with no field set), as a collector
does, and counts what it got; ``GET /stats`` answers the counts as JSON.

Its own process (``python -m bench.otlp_sink PORT``), so that what it spends decoding and
answering is not charged to the node under test: the node's exporter does its real work (build
the protobuf, POST it, wait for the answer) and only that shows in the node's CPU. It decodes
each request to count the spans in it, so "the node exported" is checked on what arrived.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


class Counts:
    """What arrived since the sink started; requests are answered on threads of their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.bytes = self.spans = self.refused = 0

    def add(self, size: int, spans: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += size
            self.spans += spans

    def refuse(self) -> None:
        with self._lock:
            self.refused += 1

    def to_json(self) -> bytes:
        with self._lock:
            return json.dumps({"requests": self.requests, "bytes": self.bytes, "spans": self.spans,
                               "refused": self.refused}).encode()


def spans_in(body: bytes, encoding: str) -> int:
    """How many spans an export request carries (the exporter sends uncompressed unless
    OTEL_EXPORTER_OTLP_COMPRESSION says gzip)."""
    request = ExportTraceServiceRequest.FromString(gzip.decompress(body) if encoding == "gzip" else body)
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def handler(counts: Counts) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the exporter's session reuses its connection

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != PATH:
                counts.refuse()
                self._answer(404, b"", PROTOBUF)
                return
            counts.add(len(body), spans_in(body, self.headers.get("Content-Encoding", "")))
            self._answer(200, b"", PROTOBUF)

        def do_GET(self) -> None:
            self._answer(200, counts.to_json(), "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # a line per export would be its own load
            pass

    return Handler


def main(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), handler(Counts())).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
