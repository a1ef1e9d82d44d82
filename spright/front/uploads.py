"""A streamed request body at its gateway: the route's first function reads it as it arrives
(``stream_body=True``, ``async for chunk in ctx.stream()``), so a body past ``max_body`` passes
without ever being held whole.

The request goes down its chain as soon as its head is in (with the body bytes that came with
it, in the request's slot); the rest follows in parts, each in a slot of its own (up to 64 KiB:
what the client sent while the function could not take more is gathered into one), as PART
descriptors numbered mod 256 in their ``hop`` byte, then END (after how many parts, mod 256).
Parts go to the one instance that took the request: its first CREDIT (``taken`` 0) names it,
the sender; until it comes, parts wait here. Flow control is the streamed answers' (spright.
worker.streams) the other way round: at most ``STREAM_WINDOW`` parts are in flight (sent, not
yet taken by the handler), CREDIT brings the count taken; past the window the gateway stops
reading the client's socket, so a slow handler holds the uploader back and the pool never
fills (a few parts per upload at most, whatever its size).

The upload stops early when the function is done with the body (CANCEL from it: it returned
or failed before reading it all), when the request ends (answered, timed out, its function
crashed), or when the client goes away or breaks the body off (the function's handler is
cancelled: CANCEL to it, the request answered 400). Parts not sent are freed here, parts in
flight by the function; what the client still sends is read and dropped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from spright.data import descriptor
from spright.data.descriptor import CREDIT, KIND_MASK, STREAM_WINDOW, Descriptor
from spright.data.response import Response, no_payload_space
from spright.host.pool import PoolExhausted, Slot
from spright.host.pools import NodePool

PART_BYTES = 64 * 1024  # a part's slot: what the client sent meanwhile, gathered, up to this
_TAIL = 4  # a slot's last word (its metadata's length) is left alone


class Reader(Protocol):
    """The client's side of an upload (spright.front.http.HttpProtocol, TestClient)."""

    def pause_body(self) -> None:
        """Stop reading the client's body: the function has all it may hold."""

    def resume_body(self) -> None:
        """Read the body again."""


class Host(Protocol):
    """What an upload needs of its gateway (spright.front.gateway.Gateway)."""

    pool: NodePool
    endpoint: int
    pending: dict[int, Any]  # request id -> (done, route, deadline, submitted at)
    uploads: dict[int, Upload]

    def send(self, record: bytes) -> None:
        """A descriptor from the gateway's endpoint, in its next batch."""

    def cut(self, request_id: int, response: Response) -> None:
        """End request ``request_id`` now with ``response`` (its slots swept after a grace time)."""


class Upload:
    """One request's body on its way to the function reading it."""

    __slots__ = (
        "_alloc",
        "_ended",
        "_fill",
        "_filled",
        "_host",
        "_paused",
        "_queued",
        "_sent",
        "_taken",
        "_view",
        "chain",
        "complete",
        "consumer",
        "over",
        "reader",
        "received",
        "request_id",
        "started",
    )

    def __init__(self, host: Host, alloc: Callable[[int, int], Slot], request_id: int, chain: int) -> None:
        """``alloc``: slots in the pool of the route's security domain."""
        self._host = host
        self._alloc = alloc
        self.request_id = request_id
        self.chain = chain
        self.reader: Reader | None = None
        self.consumer = -1  # the instance reading the body, once its first CREDIT named it
        self._queued: deque[tuple[int, int, int]] = deque()  # parts filled, not sent: (slot, generation, length)
        self._fill: Slot | None = None  # the part being filled
        self._view: memoryview | None = None
        self._filled = 0
        self._sent = 0  # parts sent
        self._taken = 0  # parts the function took (its CREDIT)
        self._paused = False
        self._ended = False  # END sent
        self.received = 0  # body bytes put in parts
        self.started = False  # the request went down its chain (Gateway.submit)
        self.complete = False  # the client sent the whole body
        self.over = False  # stopped early: what the client still sends is dropped

    # -- from the client -----------------------------------------------------------------------
    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Body bytes past those of the request's own slot."""
        if self.over:
            return
        self.received += len(chunk)
        view = memoryview(chunk)
        while view:
            if self._view is None:
                try:
                    self._fill = self._alloc(PART_BYTES, self.request_id)
                except PoolExhausted:  # the gateway's own 503 (before the request left: Incoming's)
                    if not self.started:
                        raise
                    return self.cut(no_payload_space())
                self._view = self._host.pool.view(self._fill.id)
                self._filled = 0
            room = len(self._view) - _TAIL - self._filled
            piece = view[:room]
            self._view[self._filled : self._filled + len(piece)] = piece
            self._filled += len(piece)
            view = view[len(piece):]
            if self._filled == len(self._view) - _TAIL:
                self._seal()
        if self.started:
            self._touch()
            self._pump()
        elif len(self._queued) >= STREAM_WINDOW:
            self._pause(True)

    def finish(self) -> None:
        """The client sent the whole body."""
        if self.complete:
            return
        self._pause(False)  # the next request on the connection may be read
        self.complete = True
        self.reader = None
        if self.over:
            return
        if self._filled:
            self._seal()
        if self.started:
            self._pump()

    def cut(self, response: Response) -> None:
        """The upload fails (the client broke it off, went away, passed the limit): the
        request ends with ``response``, its function is cancelled."""
        if self.consumer >= 0:
            self._host.send(descriptor.cancel(self.consumer, self._host.endpoint, self.request_id, 0))
        if self.started:
            self._host.cut(self.request_id, response)  # ends it: Gateway._ended calls stop()
        self.stop()

    # -- from the function and the gateway ------------------------------------------------------
    def start(self) -> None:
        """The request went down its chain; parts go once its function names itself."""
        self.started = True
        self._host.uploads[self.request_id] = self
        if self.over:
            return
        if self.complete and self._filled:
            self._seal()
        self._pump()

    def credit(self, d: Descriptor) -> None:
        if self.consumer < 0:
            self.consumer = d.sender  # the instance that took the request
        elif d.sender != self.consumer:
            return  # not the reader's: nothing to do with this body
        self._taken += (d.status - self._taken) & 0xFFFF
        self._touch()
        self._pump()

    def stop(self) -> None:
        """Nothing more goes to the function; its parts not sent are freed."""
        if self.over:
            return
        self.over = True
        free = self._host.pool.free
        for slot, generation, _ in self._queued:
            free(slot, generation)
        self._queued.clear()
        if self._fill is not None:
            assert self._view is not None
            self._view.release()
            free(*self._fill)
            self._fill, self._view, self._filled = None, None, 0
        self._pause(False)  # the rest is read, and dropped

    # -- inside --------------------------------------------------------------------------------
    def _seal(self) -> None:
        assert self._fill is not None and self._view is not None
        self._view.release()
        self._queued.append((self._fill.id, self._fill.generation, self._filled))
        self._fill, self._view, self._filled = None, None, 0

    def _pump(self) -> None:
        """Send what the window allows; END once every part is out; read the client while
        there is room."""
        if self.over or self.consumer < 0:
            self._pause(len(self._queued) >= STREAM_WINDOW)
            return
        host, queued = self._host, self._queued
        if not queued and self._filled and self._sent - self._taken < STREAM_WINDOW:
            self._seal()  # what came so far goes now: the function is waiting for it
        while queued and self._sent - self._taken < STREAM_WINDOW:
            slot, generation, length = queued.popleft()
            host.send(descriptor.part(self.consumer, host.endpoint, 0, self._sent, self.chain, 0, slot, generation,
                                      length, self.request_id, 0))
            self._sent += 1
        if self.complete and not queued and not self._ended:
            self._ended = True
            host.send(descriptor.end_of_stream(self.consumer, host.endpoint, 0, self._sent, self.chain, 0, 0, 0,
                                               self.request_id, 0))
        self._pause(self._sent - self._taken + len(queued) >= STREAM_WINDOW)

    def _pause(self, pause: bool) -> None:
        reader = self.reader
        if pause == self._paused or reader is None:
            return
        self._paused = pause
        if pause:
            reader.pause_body()
        else:
            reader.resume_body()

    def _touch(self) -> None:
        """The body moved: the route's timeout starts again (it runs between parts)."""
        pending = self._host.pending.get(self.request_id)
        if pending is not None:
            done, route, _, since = pending
            self._host.pending[self.request_id] = (done, route, time.monotonic() + route.timeout, since)


def signal(host: Host, d: Descriptor) -> None:
    """CREDIT or CANCEL from the function reading a body. A CREDIT for no upload (its request
    ended) is answered CANCEL: that function stops."""
    upload = host.uploads.get(d.request_id)
    if upload is None:
        if d.flags & KIND_MASK == CREDIT:
            host.send(descriptor.cancel(d.sender, host.endpoint, d.request_id, 0))
    elif d.flags & KIND_MASK == CREDIT:
        upload.credit(d)
    elif d.sender == upload.consumer:
        upload.stop()  # the function is done with the body: the rest is dropped
