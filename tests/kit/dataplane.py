"""Data-plane kit (tests/test_contract*.py, test_skmsg*.py, test_poll.py): the transports,
route tables, descriptors, recording endpoints, bounded waiting and stream comparison."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from spright.data.descriptor import (
    BODY_JSON,
    BODY_TEXT,
    CALL,
    GATEWAY,
    HAS_RESPONSE_META,
    KIND_MASK,
    REFUSED,
    REPLY,
    REQUEST,
    RESPONSE,
    SIZE,
    TRACED,
    Descriptor,
    unpack_many,
)
from spright.data.table import RouteTable
from spright.routing import App
from spright.transport import registry
from spright.transport.base import Endpoint, Transport
from spright.transport.http import HttpTransport
from spright.transport.ingress import unavailable_reason as ingress_unavailable
from spright.transport.local import LocalTransport
from spright.transport.skmsg import NEXT_IN_CHAIN

T = TypeVar("T", bound=Transport)

SETTLE = 0.2  # seconds given to stray deliveries before asserting that none came
WAIT = 5.0  # upper bound on waiting for expected deliveries


# -- the transports -------------------------------------------------------------------------
class SidecarHttpTransport(HttpTransport):
    """The http data plane as ``--sidecar --sidecar-concurrency 4`` makes it: a queue-proxy
    process in front of each function, few enough places that bursts queue in it."""

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        super().__init__(runtime_dir, table, sidecar=True, sidecar_concurrency=4)


class IngressHttpTransport(HttpTransport):
    """The http data plane as ``--sidecar --ingress`` makes it (the paper's Knative): every
    hop through one nginx, then the destination's queue-proxy."""

    def __init__(self, runtime_dir: Path, table: RouteTable) -> None:
        super().__init__(runtime_dir, table, sidecar=True, ingress=True)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return ingress_unavailable()


def every_transport() -> dict[str, type[Transport]]:
    """The in-process broker plus every data plane users can choose (http also with sidecars,
    and with the ingress before them)."""
    return {"local": LocalTransport, **registry(), "http+sidecar": SidecarHttpTransport,
            "http+ingress": IngressHttpTransport}


def _transport_params() -> Iterator[object]:
    for name, cls in every_transport().items():
        reason = cls.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"{name} unavailable: {reason}")] if reason else []
        yield pytest.param(cls, id=name, marks=marks)


@pytest.fixture(params=list(_transport_params()))
def transport_cls(request: pytest.FixtureRequest) -> type[Transport]:
    return request.param  # type: ignore[no-any-return]


# -- route tables -----------------------------------------------------------------------------
def make_table(functions: int, *, chains: Iterable[Iterable[int]] = ((1,),),
               domains: dict[int, str] | None = None) -> RouteTable:
    """Functions f1..fN (ids 1..N, the app's domain unless ``domains`` names another), one
    route per chain of function ids (compile() appends the gateway to each)."""
    app = App("app")
    for i in range(1, functions + 1):
        app.add_function(lambda ctx: None, name=f"f{i}", domain=(domains or {}).get(i))
    for n, hops in enumerate(chains):
        app.route(f"/r{n}", [f"f{i}" for i in hops])
    return app.compile()


# -- endpoints that record what they receive -------------------------------------------------
class Inbox:
    """An ``on_receive`` that only records: every descriptor, the number of callbacks, and what
    would be a contract violation (a batch that is not whole descriptors, a callback after the
    endpoint was closed). It never raises: an exception inside the transport's callback would
    not fail the test, so the test asserts on what was recorded (``take`` does it for it)."""

    def __init__(self) -> None:
        self.items: list[Descriptor] = []
        self.callbacks = 0
        self.torn: list[int] = []  # lengths of batches that were not whole descriptors
        self.closed = False
        self.after_close: list[Descriptor] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.callbacks += 1
        self._changed.set()
        if len(data) % SIZE:
            self.torn.append(len(data))
            return
        got = unpack_many(data)
        if self.closed:
            self.after_close += got
        else:
            self.items += got

    async def take(self, n: int, timeout: float = 2.0) -> list[Descriptor]:
        """The first ``n`` descriptors, removed from ``items``, once they are here; fails the
        test on a torn batch or a timeout."""
        async with asyncio.timeout(timeout):
            while len(self.items) < n and not self.torn:
                self._changed.clear()
                await self._changed.wait()
        assert not self.torn, f"batches that are not whole descriptors: {self.torn[:5]}"
        taken, self.items = self.items[:n], self.items[n:]
        return taken


async def attach(transport: Transport, endpoint_id: int) -> tuple[Endpoint, Inbox]:
    """Endpoint ``endpoint_id`` attached to ``transport``, recording into a new Inbox."""
    inbox = Inbox()
    return await transport.attach(endpoint_id, inbox), inbox


class Peer:
    """One attached endpoint: its Endpoint and its Inbox."""

    def __init__(self, endpoint_id: int, endpoint: Endpoint, inbox: Inbox) -> None:
        self.id = endpoint_id
        self.endpoint = endpoint
        self.inbox = inbox
        self.closed = False

    def send(self, descriptors: Iterable[Descriptor]) -> None:
        """One ``send()`` carrying all of ``descriptors``."""
        self.endpoint.send(b"".join(d.pack() for d in descriptors))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.endpoint.close()
            self.inbox.closed = True  # from here on, any callback is a violation


class Node:
    """A started transport and the peers attached to it."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.peers: list[Peer] = []

    async def attach(self, endpoint_id: int) -> Peer:
        endpoint, inbox = await attach(self.transport, endpoint_id)
        peer = Peer(endpoint_id, endpoint, inbox)
        self.peers.append(peer)
        return peer

    async def attach_all(self, endpoint_ids: Iterable[int]) -> dict[int, Peer]:
        return {e: await self.attach(e) for e in endpoint_ids}

    def counters(self) -> dict[int, object] | None:
        """The data plane's own per-endpoint counters (skmsg: the kernel's), else None."""
        read = getattr(self.transport, "counters", None)
        return read() if callable(read) else None

    async def close(self) -> None:
        for peer in self.peers:
            peer.close()
            await peer.endpoint.closed()
        self.transport.stop()


def started(transport: T) -> T:
    """``transport`` started as a node's is, its live sets written as once every function's
    first instance said READY (spright.front.membership)."""
    transport.instances.create()
    transport.start()
    for function in transport.table.functions:
        transport.set_live(function.id, (function.id,))
    return transport


@pytest.fixture
async def make_node(transport_cls: type[Transport], tmp_path: Path) -> AsyncIterator[Callable[[RouteTable], Node]]:
    """``make_node(table)``: a started transport of the parametrized kind; closed and
    stopped after the test."""
    nodes: list[Node] = []

    def make(table: RouteTable) -> Node:
        runtime_dir = tmp_path / f"rt{len(nodes)}"
        runtime_dir.mkdir()
        nodes.append(Node(started(transport_cls(runtime_dir, table))))
        return nodes[-1]

    yield make
    for node in nodes:
        await node.close()


# -- descriptors ------------------------------------------------------------------------------
def desc(next_hop: int, sender: int, request_id: int, *, flags: int = REQUEST, hop: int = 0, chain: int = 0,
         status: int = 0, slot: int = 0, length: int = 0, call_id: int = 0, generation: int = 0) -> Descriptor:
    return Descriptor(next_hop=next_hop, sender=sender, flags=flags, hop=hop, chain=chain, status=status, slot=slot,
                      length=length, request_id=request_id, call_id=call_id, generation=generation)


def chained(chain: int, hop: int, request_id: int) -> Descriptor:
    """A descriptor the data plane routes by its chain's table (hop ``hop`` of chain ``chain``)."""
    return desc(NEXT_IN_CHAIN, 0, request_id, hop=hop, chain=chain)


_KINDS = (REQUEST, CALL, REPLY, RESPONSE)


def numbered(next_hop: int, sender: int, seq: int) -> Descriptor:
    """Descriptor number ``seq`` (its request_id) with every other field derived from it,
    so a descriptor that arrives torn, shifted or mixed with another no longer compares
    equal to the one sent. Two in five are TRACED: a data plane carries the trace flag on."""
    return desc(
        next_hop, sender, seq,
        flags=_KINDS[seq % 4] | (BODY_JSON, BODY_TEXT, HAS_RESPONSE_META)[seq % 3] | (TRACED if seq % 5 < 2 else 0),
        hop=seq % 31, chain=seq % 997, status=200 + seq % 400, slot=(seq * 7919) & 0xFFFFFFFF,
        length=seq * 13, call_id=sender << 20 | seq, generation=(seq * 2654435761) & 0xFFFFFFFF,
    )


def bounced(d: Descriptor) -> Descriptor:
    """What the sender of ``d`` gets back when ``d`` crosses a security domain."""
    return d._replace(next_hop=d.sender, flags=(d.flags & ~KIND_MASK) | REFUSED)


def allowed(table: RouteTable, sender: int, target: int) -> bool:
    """The domain rule, stated independently of the transports' own implementation."""
    def domain(endpoint: int) -> int:  # any instance's endpoint, a spare revision slot's too
        function_id = table.function_of(endpoint)
        return table.functions[function_id - 1].domain if function_id else 0

    return GATEWAY in (sender, target) or domain(sender) == domain(target)


# -- waiting and comparing --------------------------------------------------------------------
async def arrival(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll until ``condition()`` holds or ``timeout`` passes (the caller asserts after)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.005)


async def received(inboxes: dict[int, Inbox], expected: dict[int, list[Descriptor]], timeout: float = WAIT) -> None:
    """Wait until every inbox holds at least what it should, then give strays time."""
    await arrival(lambda: all(len(inboxes[e].items) >= len(want) for e, want in expected.items()), timeout)
    await asyncio.sleep(SETTLE)


def stream_diff(got: list[Descriptor], want: list[Descriptor]) -> str:
    """'' when equal, else a short account of how they differ (lists may be thousands long)."""
    if got == want:
        return ""
    first = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), min(len(got), len(want)))
    got_count, want_count = collections.Counter(got), collections.Counter(want)
    missing = sum((want_count - got_count).values())
    extra = sum((got_count - want_count).values())
    return (f"{len(got)} received, {len(want)} expected; {missing} missing, {extra} unexpected or duplicated; "
            f"first difference at #{first}: got {got[first] if first < len(got) else 'nothing'}, "
            f"expected {want[first] if first < len(want) else 'nothing'}")


def assert_streams(inboxes: dict[int, Inbox], expected: dict[int, list[Descriptor]]) -> None:
    """Each inbox holds exactly its expected descriptors, in that order, whole."""
    problems = []
    for endpoint_id, want in expected.items():
        inbox = inboxes[endpoint_id]
        if inbox.torn:
            problems.append(f"endpoint {endpoint_id}: batches that are not whole descriptors: {inbox.torn[:5]}")
        if diff := stream_diff(inbox.items, want):
            problems.append(f"endpoint {endpoint_id}: {diff}")
    assert not problems, "\n".join(problems)


def by_sender(items: list[Descriptor]) -> dict[int, list[Descriptor]]:
    split: dict[int, list[Descriptor]] = collections.defaultdict(list)
    for d in items:
        split[d.sender].append(d)
    return split
