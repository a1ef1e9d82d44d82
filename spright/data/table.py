"""The compiled app: plain, frozen data that every part of the node reads.

``App.compile()`` (spright/routing.py) builds one ``RouteTable``: function ids and their
instances' endpoint ids, hop lists with their timeouts, routes with their patterns, security
domains. Every data plane consumes it, ``spright routes`` prints it, node.json describes it,
and on the eBPF data plane it is written into the kernel's maps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spright.data.descriptor import GATEWAY, GATEWAY_SHIFT, REQUEST, RESPONSE

BUILTIN_CHAIN = -1  # RouteEntry.chain of a route the gateway serves itself
BUILTINS = {("GET", "/metrics"): "metrics"}  # served by the gateway unless the app routes them
MAX_GATEWAYS = 1 << (32 - GATEWAY_SHIFT)
# One limit for every data plane (App.compile checks it, naming the route), sized for the
# eBPF plane's route map: MAX_CHAINS * MAX_HOPS entries.
MAX_CHAINS = 1024  # distinct chains (hops and timeout) of an app
MAX_HOPS = 32  # positions per chain, the final gateway included
# Revision slots per function: the one serving, and one where a reload or rollout starts the
# next revision beside it (spright.node.revisions), on endpoints of its own.
REVISION_SLOTS = 2


@dataclass(frozen=True)
class FunctionEntry:
    id: int
    name: str
    concurrency: int
    domain: int  # index into RouteTable.domains; descriptors never cross domains
    process: str  # the worker process hosting it (by default, one per function)
    instances: int = 1  # instances started with the node
    # endpoint id of each instance it may have, its own id first: two revision slots of
    # max_instances each (a reload or rollout starts the new revision in the slot not serving)
    endpoints: tuple[int, ...] = ()
    scales_to_zero: bool = False  # its autoscaler may stop its last instance (the activator holds its work)


@dataclass(frozen=True)
class RouteEntry:
    method: str
    path: str
    chain: int  # BUILTIN_CHAIN for a page the gateway serves itself
    timeout: float
    pattern: re.Pattern[str] = field(compare=False, repr=False)
    index: int = 0  # position in RouteTable.routes
    converters: tuple[tuple[str, Callable[[str], Any]], ...] = field(default=(), compare=False, repr=False)
    builtin: str | None = None  # which built-in page (BUILTINS), for BUILTIN_CHAIN
    # its chain's first function reads the body as it arrives (``stream_body``): the gateway sends
    # the request on at its head and the body after it in parts (spright.front.uploads)
    stream_body: bool = False

    def convert(self, params: dict[str, str]) -> dict[str, Any]:
        """The path parameters as the handler gets them (``{n:int}`` -> int)."""
        if not self.converters:
            return params
        typed: dict[str, Any] = dict(params)
        for name, convert in self.converters:
            typed[name] = convert(typed[name])
        return typed


class NotFound(LookupError):
    pass


class MethodNotAllowed(LookupError):
    def __init__(self, allowed: list[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


@dataclass(frozen=True)
class RouteTable:
    """The compiled app: ids from 1 (0 is the gateway); every chain ends at the gateway.

    A chain is a hop list with its timeout (routes with the same hops and timeout share
    one). Domain 0 is the gateway's, which may exchange descriptors with every domain;
    functions of different domains (1, 2, ...) may not: a chain stays inside one domain
    (checked by ``App.compile``) and every data plane refuses a call across domains.
    """

    functions: tuple[FunctionEntry, ...]
    chains: tuple[tuple[int, ...], ...]
    routes: tuple[RouteEntry, ...]
    domains: tuple[str, ...] = ("gateway",)
    timeouts: tuple[float, ...] = ()  # per chain: how long anyone waits on one of its requests
    gateways: tuple[int, ...] = (GATEWAY,)  # endpoint id of each gateway process (the first is 0)

    _ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _function_of: dict[int, int] = field(init=False, repr=False, compare=False)
    _exact: dict[tuple[str, str], RouteEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {f.name: f.id for f in self.functions})
        object.__setattr__(self, "_function_of", {e: f.id for f in self.functions for e in f.endpoints or (f.id,)})
        object.__setattr__(self, "_exact", {(r.method, r.path): r for r in self.routes if "{" not in r.path})

    def function_id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise LookupError(f"no function named {name!r}") from None

    @property
    def endpoints(self) -> list[int]:
        """Every endpoint id of the node: the gateway, the functions (1..N), then the ids set
        aside for their further instances."""
        return [GATEWAY, *sorted(self._function_of), *self.gateways[1:]]

    def function_of(self, endpoint_id: int) -> int:
        """The function an endpoint serves (a gateway's is the gateway, 0)."""
        return GATEWAY if endpoint_id in self.gateways else self._function_of[endpoint_id]

    def instance_endpoints(self, function_id: int) -> tuple[int, ...]:
        """Endpoint id of each instance ``function_id`` may have (its own id first), in both
        revision slots: ``max_instances`` of the first slot, then as many of the second."""
        entry = self.functions[function_id - 1]
        return entry.endpoints or (entry.id,)

    def max_instances(self, function_id: int) -> int:
        """How many instances one revision of ``function_id`` may run."""
        return max(len(self.instance_endpoints(function_id)) // REVISION_SLOTS, 1)

    def slot_endpoints(self, function_id: int, slot: int) -> tuple[int, ...]:
        """The endpoints of revision slot ``slot`` (0 or 1) of ``function_id``."""
        most = self.max_instances(function_id)
        return self.instance_endpoints(function_id)[slot * most : (slot + 1) * most]

    def processes(self) -> dict[str, tuple[int, ...]]:
        """Worker process name -> the ids of the functions it hosts, in registration order."""
        hosted: dict[str, tuple[int, ...]] = {}
        for f in self.functions:
            hosted[f.process] = (*hosted.get(f.process, ()), f.id)
        return hosted

    def name_of(self, endpoint_id: int) -> str:
        """The function an endpoint serves, by name; "gateway" for every gateway process's."""
        function_id = self.function_of(endpoint_id)
        return "gateway" if function_id == GATEWAY else self.functions[function_id - 1].name

    def domain_of(self, endpoint_id: int) -> str:
        function_id = self.function_of(endpoint_id)
        return self.domains[0 if function_id == GATEWAY else self.functions[function_id - 1].domain]

    def steps(self, addresses: tuple[tuple[int, ...], ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per chain and position: the (next_hop, kind) of the descriptor that goes there.
        The one place that decides a request's next hop: ``addresses`` is the data plane's
        way of naming each position (``Transport.addresses``); the kind is RESPONSE where
        the chain returns to the gateway."""
        return tuple(
            tuple((address, RESPONSE if hop == GATEWAY else REQUEST) for hop, address in zip(hops, named, strict=True))
            for hops, named in zip(self.chains, addresses, strict=True)
        )

    def match(self, method: str, path: str) -> tuple[RouteEntry, dict[str, str]]:
        """The route for ``method path``; HEAD falls back to GET, as HTTP expects."""
        exact = self._exact
        route = exact.get((method, path)) or (method == "HEAD" and exact.get(("GET", path)))
        if route:
            return route, {}
        allowed: list[str] = []
        fallback = None
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            if method == "HEAD" and route.method == "GET" and fallback is None:
                fallback = route, found.groupdict()
            allowed.extend(("GET", "HEAD") if route.method == "GET" else (route.method,))
        if fallback is not None:
            return fallback
        if allowed:
            raise MethodNotAllowed(sorted(set(allowed)))
        raise NotFound(path)

    def describe_functions(self) -> list[dict[str, Any]]:
        """Plain rows per function: id, name, concurrency, domain name, hosting process."""
        return [
            {"id": f.id, "name": f.name, "concurrency": f.concurrency, "domain": self.domains[f.domain],
             "process": f.process, "instances": f.instances, "endpoints": list(self.instance_endpoints(f.id))}
            for f in self.functions
        ]

    def describe(self) -> list[dict[str, Any]]:
        """Plain rows for ``spright routes``: route, chain of names and ids."""
        return [
            {
                "method": route.method,
                "path": route.path,
                "chain": route.chain,
                "hops": [{"id": i, "name": self.name_of(i)} for i in self.chains[route.chain]],
                "timeout": route.timeout,
            }
            for route in self.routes
            if route.builtin is None
        ]
