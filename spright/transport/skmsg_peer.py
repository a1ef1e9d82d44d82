"""The dummy TCP peer of every sk_msg endpoint socket, and the drain of the sink socket.

Each endpoint socket must be a connected TCP socket for the kernel to take it into a
sockhash; its peer is accepted here and never written. Reading those peers only notices
EOF (to close the peer of an exited worker) and counts bytes that bypassed the redirect
(``tcp_bytes``: a bug if ever non-zero). The sink receives the descriptors the eBPF program
could not deliver (it redirects them rather than dropping, which would fail the send()).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable
from typing import cast


class DummyPeer:
    """A listener thread: accepts endpoint peers, watches them for EOF, drains the sink."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=socket.SOMAXCONN)
        self.port: int = self._server.getsockname()[1]
        self.tcp_bytes = 0
        self._buffer = bytearray(1 << 16)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="spright-skmsg", daemon=True)
        self._watch(self._server, self._accept)
        self._watch(self._wake_r, None)

    def _watch(self, sock: socket.socket, handler: Callable[[socket.socket], None] | None) -> None:
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, handler)

    def start(self, sink: socket.socket) -> None:
        self._watch(sink, self._drain)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                with contextlib.suppress(OSError):  # EAGAIN, EINTR, EMFILE: retry on next readiness
                    key.data(key.fileobj)

    def _accept(self, server: socket.socket) -> None:
        conn, _ = server.accept()
        self._watch(conn, self._peer)

    def _peer(self, conn: socket.socket) -> None:
        try:
            n = conn.recv_into(self._buffer)
        except ConnectionError:
            n = 0
        if n:
            self.tcp_bytes += n
        else:
            self._selector.unregister(conn)
            conn.close()

    def _drain(self, sink: socket.socket) -> None:
        if not sink.recv_into(self._buffer):
            self._selector.unregister(sink)
            sink.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"\0")
            self._thread.join()
        for key in list(self._selector.get_map().values()):
            cast(socket.socket, key.fileobj).close()
        self._selector.close()
        self._wake_w.close()
