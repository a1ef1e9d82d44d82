"""Workers without privileges on skmsg: the gateway puts their sockets into the sockhash.

A worker spawned by ``spright run`` registers its own socket through the pinned maps, with the
bpf(2) syscall. A worker started on its own (``spright worker``, pod mode) need not: it hands
its connected socket to the gateway over ``register.sock`` in the node directory (SCM_RIGHTS),
and the gateway, which loaded the program, registers it and answers the socket's port. Such a
worker needs no capability, no bpffs and no seccomp exception: only the node directory and
/dev/shm. The gateway serves registrations on a thread of its own (they are rare: one per
worker start).

Life cycle: ``Registrar(...)`` in the gateway once its maps are pinned, ``close()`` before it
unpins them; ``register_through(path, ...)`` in the worker, before the socket sends anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Collection
from pathlib import Path

import orjson

from spright.transport.skmsg_maps import register_socket

log = logging.getLogger("spright")
SOCKET_NAME = "register.sock"


class Registrar:
    def __init__(self, path: Path, pin_dir: Path, endpoints: Collection[int]) -> None:
        """``endpoints``: the ids a worker may register (the functions' instances)."""
        self.path = path
        self._pin_dir = pin_dir
        self._endpoints = frozenset(endpoints)
        path.unlink(missing_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        path.chmod(0o600)
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._serve, name="spright-registrar", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            with connection:
                connection.settimeout(5)
                try:
                    connection.sendall(orjson.dumps(self._register(connection)))
                except OSError as exc:
                    log.warning("spright: a worker's registration failed: %s", exc)

    def _register(self, connection: socket.socket) -> dict[str, object]:
        message, fds, _, _ = socket.recv_fds(connection, 1024, 1)
        with contextlib.ExitStack() as received:
            for fd in fds:
                received.callback(os.close, fd)
            try:
                endpoint = int(orjson.loads(message)["endpoint"])
            except (ValueError, KeyError, TypeError):
                return {"error": "a registration is {\"endpoint\": ID} with one socket"}
            if endpoint not in self._endpoints or len(fds) != 1:
                return {"error": f"endpoint {endpoint} is not a function's, or no socket came with it"}
            sock = socket.socket(fileno=os.dup(fds[0]))
            with sock:
                if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
                    return {"error": "the socket must be the worker's connected TCP socket"}
                return {"port": register_socket(self._pin_dir, endpoint, sock)}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(2)
        self.path.unlink(missing_ok=True)


def register_through(path: Path, endpoint_id: int, sock: socket.socket) -> int:
    """Have the gateway serving ``path`` register ``sock`` as ``endpoint_id``'s; its port."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(str(path))
        socket.send_fds(connection, [orjson.dumps({"endpoint": endpoint_id})], [sock.fileno()])
        answer = orjson.loads(connection.recv(1024) or b"{}")
    if "port" not in answer:
        raise RuntimeError(f"the gateway did not register endpoint {endpoint_id}: {answer.get('error', 'no answer')}")
    return int(answer["port"])
