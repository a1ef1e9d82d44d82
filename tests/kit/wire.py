"""Raw HTTP/1.1 over plain sockets: the test, not a client library, decides which bytes are
sent when, and sees every byte that comes back."""

from __future__ import annotations

import socket

import pytest


def read_until_close(sock: socket.socket, timeout: float = 10.0, *, reset_is_close: bool = False) -> bytes:
    """Everything the server sends until it closes. A server that neither closes nor sends
    within ``timeout`` fails the test (a hang is no close); so does a reset, unless
    ``reset_is_close`` (then what came before it is the answer)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        if not reset_is_close:
            raise
    except TimeoutError:
        pytest.fail(f"the server neither answered nor closed within {timeout:g} s; it sent {received[:120]!r}")
    return received


def exchange(port: int, data: bytes, timeout: float = 10.0, *, half_close: bool = True,
             reset_is_close: bool = False) -> bytes:
    """Send ``data`` on a new connection and return what the server sends until it closes.
    ``half_close``: then shut the writing side (no more is coming: the server must answer or
    close, not wait for the rest); without it, ``data`` itself must make the server close
    (``Connection: close``), as the node takes a client's end of writing for its leaving."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_until_close(sock, timeout, reset_is_close=reset_is_close)


class Connection:
    """A blocking socket with a reader of whole HTTP/1.1 responses (timeouts fail the test)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError(f"closed by the server after {self.buffer[:200]!r}")
        self.buffer += data

    def head(self) -> tuple[int, dict[str, str]]:
        """The next status line and headers (an interim 100 Continue too)."""
        status, lines = self.head_lines()
        return status, {name.lower(): value for name, value in lines}

    def head_lines(self) -> tuple[int, list[tuple[str, str]]]:
        """The next status line and header lines, in order and repeated as sent."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        split = (line.partition(":") for line in lines)
        return int(status), [(name.strip(), value.strip()) for name, _, value in split]

    def response(self, bodiless: bool = False) -> tuple[int, dict[str, str], bytes]:
        """``bodiless``: the answer to a HEAD, or one that must have no body (1xx, 204, 304)."""
        status, headers = self.head()
        if bodiless:
            return status, headers, b""
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        """Whether the server closes the connection (not a reset) with nothing more sent;
        waits for it up to the timeout."""
        return not self.buffer and self.sock.recv(1) == b""
