"""What a gateway process does beside answering requests: its role in the node.

The node's first gateway process is its **coordinator**: workers announce themselves to it, it
keeps every instance's membership (spright.front.membership), parks what arrives for a function
with no live instance (spright.front.activator), and tells the workers and the other gateways
when a function goes down after a crash or comes back. Every other gateway process is a
**follower**: it announces itself to the coordinator and learns from it which functions are down.

A role is given to the ``Gateway`` at construction and receives, in ``attached``, the gateway and
its outbox once the gateway is on the data plane (as an asyncio protocol gets its transport).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from spright.data import descriptor
from spright.data.descriptor import (
    BODY_JSON,
    CALL,
    CANCEL,
    CREDIT,
    DOWN,
    ERROR,
    GATEWAY,
    KIND_MASK,
    READY,
    REQUEST,
    Descriptor,
)
from spright.data.table import RouteTable
from spright.front.activator import Activator
from spright.front.gateway import Gateway
from spright.front.membership import SERVING, Membership
from spright.host.pool import PoolExhausted
from spright.host.pools import NodePool
from spright.transport.base import Outbox, Transport


class Coordinator:
    """The first gateway's role (see the module's docstring)."""

    def __init__(self, table: RouteTable, pool: NodePool, transport: Transport,
                 wake: Callable[[int], None] = lambda function_id: None) -> None:
        """``transport``: the node's data plane, whose live sets membership writes; ``wake``:
        asks for an instance of a function id that has none (the supervisor starts one)."""
        self.table = table
        self._pool = pool
        self.members = Membership(table, transport, self)
        self.revisions = transport.instances.revisions  # for /metrics
        self.activator = Activator(table.gateways[0], self._send, wake)
        self.gateways_serving: set[int] = set()  # the further gateways that announced themselves
        self._endpoints = frozenset(table.endpoints)
        self._gateway: Gateway
        self._outbox: Outbox

    @property
    def down(self) -> set[int]:
        return self.members.down

    def attached(self, gateway: Gateway, outbox: Outbox) -> None:
        self._gateway, self._outbox = gateway, outbox

    def instances(self, function_id: int) -> int:
        return self.members.serving(function_id)

    async def wait_ready(self, timeout: float) -> None:
        """Until every instance the node starts with serves; RuntimeError naming the others."""
        table = self.table
        await self.members.wait_serving(
            (e for f in table.functions for e in table.instance_endpoints(f.id)[: f.instances]), timeout)

    def receive(self, d: Descriptor) -> None:
        kind = d.flags & KIND_MASK
        if kind in (REQUEST, CALL):
            self._activate(d)
        elif kind in (CREDIT, CANCEL) and self.activator.relay_back(d):
            pass  # of a streamed call the activator held: on to the instance streaming it
        elif kind == READY and d.sender in self.table.gateways[1:]:
            self.gateways_serving.add(d.sender)
        elif kind == READY and d.sender in self._endpoints and d.sender not in self.table.gateways:
            if not self.members.announced(d.sender):
                self._gateway.drop(d, f"a READY from an instance that is {self.members.state(d.sender).value}")
        else:
            self._gateway.drop(d, "its kind is not one the gateway receives" if kind != READY
                               else "a READY from no function")

    def relay(self, d: Descriptor) -> bool:
        return self.activator.relay(d)

    def _activate(self, d: Descriptor) -> None:
        """For a function with no live instance: parked until one serves; dropped quietly if
        the function is down (its requests were answered 502)."""
        function_id = self.table.function_of(d.next_hop) if d.next_hop in self._endpoints else 0
        if function_id not in self.down and not (function_id and self.activator.park(function_id, d)):
            self._gateway.drop(d, "a request or call the activator cannot hold")

    def _send(self, data: bytes) -> None:
        self._outbox.put(data)

    # -- membership's listener -------------------------------------------------------------
    def became_live(self, function_id: int) -> None:
        self.activator.release(function_id)

    def back(self, function_id: int) -> None:
        self._tell(READY, function_id)

    def gone(self, endpoint: int) -> None:
        """A retired instance exited: a handler it still ran when its drain_timeout ended
        answers 503 now (its slot is released), not at the request's timeout."""
        held = self._pool.release_holds(endpoint)
        if held:
            self._fail_held(self.table.name_of(endpoint), held, "stopped before its handler ended", 503)

    def died(self, endpoint: int, function_down: bool) -> None:
        """Once a function has no instance left, fail at once the requests whose chain runs
        through it, and tell callers; while others serve, fail the requests whose handler it
        was running (the slots it held). What waited unread in its queue is lost to the
        requests' timeout."""
        self._gateway.sweep_later()
        held = self._pool.release_holds(endpoint)  # a dead worker writes nothing: its slots may be swept
        function_id = self.table.function_of(endpoint)
        if function_down:
            self._tell(DOWN, function_id)
            self._gateway.fail_through(function_id)
        else:
            self._fail_held(self.table.name_of(function_id), held)

    def _fail_held(self, name: str, held: list[tuple[int, int, int]], why: str = "crashed",
                   status: int = 502) -> None:
        """An error (502: it crashed) for the request of each slot an instance held, sent as an ERROR to the
        gateway that owns the request (the data plane routes it by request id)."""
        payload = orjson.dumps({"error": f"function {name!r} {why}", "status": status, "function": name})
        for slot, generation, request_id in held:
            try:
                written = self._pool.write(slot, generation, payload, b"", request_id)
            except (PoolExhausted, ValueError):
                continue  # left to the request's timeout
            self._send(descriptor.hop(GATEWAY, self.table.gateways[0], ERROR | BODY_JSON, 0, 0, status, written.id,
                                      written.generation, len(payload), request_id))

    def _tell(self, kind: int, function_id: int) -> None:
        """DOWN/READY about ``function_id`` to every serving worker and the other gateways:
        their ctx.calls to it fail fast while it is down instead of waiting for a timeout."""
        for endpoint in (*self.members.endpoints(*SERVING), *self.table.gateways[1:]):
            self._send(descriptor.notice(endpoint, GATEWAY, kind, function_id))


class Follower:
    """A further gateway's role: it learns from the coordinator which functions are down."""

    def __init__(self, table: RouteTable, transport: Transport) -> None:
        self.table = table
        self.down: set[int] = set()
        self._live = transport.instances
        self.revisions = transport.instances.revisions  # for /metrics
        self._gateway: Gateway
        self._outbox: Outbox

    def attached(self, gateway: Gateway, outbox: Outbox) -> None:
        self._gateway, self._outbox = gateway, outbox

    def announce(self) -> None:
        """Tell the coordinator that this gateway serves."""
        self._outbox.put(descriptor.notice(GATEWAY, self._gateway.endpoint, READY))

    def instances(self, function_id: int) -> int:
        """As the live sets say."""
        return len(self._live.get(function_id))

    def receive(self, d: Descriptor) -> None:
        kind = d.flags & KIND_MASK
        if kind not in (READY, DOWN) or d.sender != GATEWAY:
            return self._gateway.drop(d, "its kind is not one a further gateway receives")
        function_id = d.call_id
        if not 0 < function_id <= len(self.table.functions):
            return self._gateway.drop(d, "it names no function")
        if kind == READY:
            self.down.discard(function_id)
        else:
            self.down.add(function_id)
            self._gateway.fail_through(function_id)

    def relay(self, d: Descriptor) -> bool:
        return False
