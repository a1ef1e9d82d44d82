"""The ceiling: a bare uvloop + httptools keep-alive "hello" server with no framework at all.

Every spright figure is reported as a ratio against this server measured in the same run, so
machine noise and CPU frequency cancel out. Usage: ``python -m bench.raw_server PORT``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

import httptools
import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
CLOSE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


class HelloProtocol(asyncio.Protocol):
    """Answers every complete request in order; pipelined requests work because httptools
    calls ``on_message_complete`` once per request in the buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        if self.parser.should_keep_alive():
            self.transport.write(RESPONSE)
        else:
            self.transport.write(CLOSE_RESPONSE)
            self.transport.close()


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(HelloProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000))
