"""The Knative-like baseline: the same 3-hop echo, but every hop is an HTTP request between
aiohttp server processes (front -> middle -> back), each hop reusing a keep-alive session.

This is what SPRIGHT replaces: per hop a full HTTP serialise/parse and a TCP round trip.
Usage: ``python -m bench.aiohttp_chain PORT1 PORT2 PORT3`` (PORT1 faces the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import aiohttp
from aiohttp import web


def build_app(downstream: str | None) -> web.Application:
    """A hop that echoes the body, after handing it to ``downstream`` when there is one."""
    app = web.Application()

    async def open_session(app: web.Application) -> None:
        if downstream is not None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
            app["session"] = aiohttp.ClientSession(connector=connector)

    async def close_session(app: web.Application) -> None:
        if "session" in app:
            await app["session"].close()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if downstream is None:
            return web.Response(body=body)
        async with request.app["session"].post(downstream, data=body) as reply:
            return web.Response(body=await reply.read(), status=reply.status)

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/", handle)
    return app


def serve(port: int, downstream: str | None) -> None:
    """Run one hop until SIGTERM (aiohttp's run_app turns SIGTERM into a clean shutdown)."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(build_app(downstream), host="127.0.0.1", port=port, print=None, access_log=None)


def main(ports: list[int]) -> None:
    """Fork the three hops, then forward SIGTERM/SIGINT to them and reap them."""
    children: list[int] = []
    for index, port in enumerate(ports):
        downstream = f"http://127.0.0.1:{ports[index + 1]}/" if index + 1 < len(ports) else None
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            serve(port, downstream)
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue


if __name__ == "__main__":
    main([int(p) for p in sys.argv[1:4]] if len(sys.argv) >= 4 else [8100, 8101, 8102])
