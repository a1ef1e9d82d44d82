"""The DSL: register functions, map HTTP routes to chains, compile one route table.

Routing is plain data: the compiled ``RouteTable`` (function ids, hop lists, routes) is what
every transport consumes, what ``spright routes`` prints and, on the eBPF data plane, what
is written into the kernel's maps.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from spright.config import Config, PoolConfig
from spright.descriptor import GATEWAY, REQUEST, RESPONSE
from spright.pool import MAX_DOMAINS

Handler = Callable[[Any], Any]
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?}")
# path parameter type -> (what it matches, what the handler gets), as Starlette's convertors
CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": ("[^/]+", str),
    "path": (".+", str),
    "int": ("[0-9]+", int),
    "float": (r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": ("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID),
}
BUILTIN_CHAIN = -1  # RouteEntry.chain of a route the gateway serves itself
BUILTINS = {("GET", "/metrics"): "metrics"}  # served by the gateway unless the app routes them


class RoutingError(ValueError):
    """A mistake in the app's declaration, reported at startup."""


@dataclass(frozen=True, eq=False)
class Function:
    """A registered handler. Calling it calls the handler (handy in unit tests)."""

    name: str
    handler: Handler
    concurrency: int = 64
    domain: str | None = None  # security domain; None: the app's own
    process: str | None = None  # worker process to share with other functions; None: its own

    def __call__(self, ctx: Any) -> Any:
        return self.handler(ctx)

    def __rshift__(self, other: Function | Chain) -> Chain:
        return Chain((self,)) >> other


@dataclass(frozen=True)
class Chain:
    """Hops in order; ``a >> b >> a`` is fine: a function may appear more than once."""

    hops: tuple[Function | str, ...]

    def __rshift__(self, other: Function | Chain | str) -> Chain:
        tail = other.hops if isinstance(other, Chain) else (other,)
        return Chain(self.hops + tail)


ChainSpec = Function | Chain | str | Iterable[Function | str]


@dataclass(frozen=True)
class FunctionEntry:
    id: int
    name: str
    concurrency: int
    domain: int  # index into RouteTable.domains; descriptors never cross domains
    process: str  # the worker process hosting it (by default, one per function)


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

    _ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _exact: dict[tuple[str, str], RouteEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {f.name: f.id for f in self.functions})
        object.__setattr__(self, "_exact", {(r.method, r.path): r for r in self.routes if "{" not in r.path})

    def function_id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise LookupError(f"no function named {name!r}") from None

    @property
    def endpoints(self) -> list[int]:
        """Every endpoint id of the node: the gateway, then the functions."""
        return [GATEWAY, *(f.id for f in self.functions)]

    def processes(self) -> dict[str, tuple[int, ...]]:
        """Worker process name -> the ids of the functions it hosts, in registration order."""
        hosted: dict[str, tuple[int, ...]] = {}
        for f in self.functions:
            hosted[f.process] = (*hosted.get(f.process, ()), f.id)
        return hosted

    def name_of(self, endpoint_id: int) -> str:
        return "gateway" if endpoint_id == GATEWAY else self.functions[endpoint_id - 1].name

    def domain_of(self, endpoint_id: int) -> str:
        return self.domains[0 if endpoint_id == GATEWAY else self.functions[endpoint_id - 1].domain]

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
             "process": f.process}
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


class App:
    """Functions and routes of one application; ``compile()`` checks and freezes them."""

    def __init__(
        self, name: str = "app", *, default_timeout: float | None = None, pool: PoolConfig | None = None,
        config: Config | None = None,
    ) -> None:
        """``config``: the node's settings (spright.Config); ``default_timeout`` and ``pool``
        (slot sizes and counts; ``pool.max_body`` is the body limit) are shortcuts into it."""
        self.name = name
        config = config or Config()
        if default_timeout is not None:
            config = config.replace(default_timeout=default_timeout)
        if pool is not None:
            config = config.replace(pool=pool)
        self.config = config
        self.functions: dict[str, Function] = {}
        self._routes: list[tuple[str, str, ChainSpec, float]] = []

    def function(
        self, name: str | None = None, *, concurrency: int = 64, domain: str | None = None, process: str | None = None
    ) -> Callable[[Handler], Function]:
        """Decorator form of ``add_function``."""
        return lambda handler: self.add_function(
            handler, name=name, concurrency=concurrency, domain=domain, process=process
        )

    def add_function(
        self,
        handler: Handler,
        *,
        name: str | None = None,
        concurrency: int = 64,
        domain: str | None = None,
        process: str | None = None,
    ) -> Function:
        """Register ``handler``. ``domain`` isolates it from functions of other domains;
        functions naming the same ``process`` share one worker process: hops between them
        skip the cross-process wake-up (they still go through the data plane, and keep their
        own endpoint, counters and domain), at the price of failing together."""
        name = name or str(getattr(handler, "__name__", ""))
        if not callable(handler):
            raise RoutingError(f"function {name!r}: handler {handler!r} is not callable")
        if not _NAME.match(name):
            raise RoutingError(f"function name {name!r} must be an identifier-like name (letters, digits, _ . -)")
        if name in self.functions:
            raise RoutingError(f"function {name!r} is registered twice")
        if concurrency < 1:
            raise RoutingError(f"function {name!r}: concurrency must be >= 1, got {concurrency}")
        for kind, value in (("domain", domain), ("process", process)):
            if value is not None and not _NAME.match(value):
                raise RoutingError(f"function {name!r}: {kind} {value!r} must be an identifier-like name")
        function = self.functions[name] = Function(name, handler, concurrency, domain, process)
        return function

    def route(
        self, path: str, chain: ChainSpec, *, methods: Iterable[str] = ("GET",), timeout: float | None = None
    ) -> None:
        """Map ``path`` (``/product/{id}``, ``{n:int}``, ``{rest:path}``) to a chain."""
        if isinstance(methods, str):
            methods = (methods,)
        for method in methods:
            self._routes.append((method.upper(), path, chain, timeout or self.config.default_timeout))

    def compile(self) -> RouteTable:
        if not self.functions:
            raise RoutingError(f"app {self.name!r} registers no functions")
        ids = {name: number for number, name in enumerate(self.functions, start=1)}
        domains = ["gateway"]
        for f in self.functions.values():
            if (f.domain or self.name) not in domains:
                domains.append(f.domain or self.name)
        if len(domains) > MAX_DOMAINS:  # the gateway's + each a pool of its own, named in every slot id
            raise RoutingError(f"app {self.name!r} has {len(domains) - 1} security domains; at most "
                               f"{MAX_DOMAINS - 1} are supported")
        functions = tuple(
            FunctionEntry(ids[f.name], f.name, f.concurrency, domains.index(f.domain or self.name), f.process or f.name)
            for f in self.functions.values()
        )
        process_domains: dict[str, int] = {}
        for entry in functions:
            if process_domains.setdefault(entry.process, entry.domain) != entry.domain:
                raise RoutingError(f"function {entry.name!r}: process {entry.process!r} hosts functions of security "
                                   f"domains {domains[process_domains[entry.process]]!r} and "
                                   f"{domains[entry.domain]!r}; a process maps one domain's memory, so functions "
                                   f"of different domains need processes of their own")
        chains: list[tuple[tuple[int, ...], float]] = []
        routes: list[RouteEntry] = []
        seen: set[tuple[str, str]] = set()
        for method, path, spec, timeout in self._routes:
            where = f"route {method} {path}"
            if method not in HTTP_METHODS:
                raise RoutingError(f"{where}: unknown HTTP method {method!r}")
            if not path.startswith("/"):
                raise RoutingError(f"{where}: path must start with '/'")
            if (method, path) in seen:
                raise RoutingError(f"{where} is declared twice")
            seen.add((method, path))
            names = self._hop_names(spec, ids, where)
            _check_one_domain(names, functions, ids, domains, where)
            chain = ((*(ids[name] for name in names), GATEWAY), timeout)
            if chain not in chains:
                chains.append(chain)
            pattern, converters = _compile_path(path, where)
            routes.append(RouteEntry(method, path, chains.index(chain), timeout, pattern, len(routes), converters))
        for (method, path), page in BUILTINS.items():
            if (method, path) not in seen:
                pattern, _ = _compile_path(path, page)
                routes.append(RouteEntry(method, path, BUILTIN_CHAIN, 0.0, pattern, len(routes), builtin=page))
        return RouteTable(functions, tuple(hops for hops, _ in chains), tuple(routes), tuple(domains),
                          tuple(timeout for _, timeout in chains))

    def _hop_names(self, spec: ChainSpec, ids: dict[str, int], where: str) -> list[str]:
        if isinstance(spec, (Function, str)):
            items: Iterable[Function | str] = (spec,)
        elif isinstance(spec, Chain):
            items = spec.hops
        else:
            items = spec
        names = [item.name if isinstance(item, Function) else item for item in items]
        if not names:
            raise RoutingError(f"{where}: the chain is empty")
        for name in names:
            if not isinstance(name, str) or name not in ids:
                known = ", ".join(sorted(ids))
                raise RoutingError(f"{where}: unknown function {name!r} (registered: {known})")
            if isinstance(spec, Function) and self.functions[name] is not spec:
                raise RoutingError(f"{where}: function {name!r} belongs to another app")
        return names


def _check_one_domain(names: list[str], functions: tuple[FunctionEntry, ...], ids: dict[str, int],
                      domains: list[str], where: str) -> None:
    """A chain's hops must share one security domain: the gateway is the only bridge."""
    crossing: dict[str, list[str]] = {}
    for name in names:
        crossing.setdefault(domains[functions[ids[name] - 1].domain], []).append(name)
    if len(crossing) > 1:
        parts = "; ".join(f"{domain!r}: {', '.join(dict.fromkeys(members))}" for domain, members in crossing.items())
        raise RoutingError(f"{where}: the chain crosses security domains ({parts}); a chain stays in one domain "
                           "(the gateway is the only bridge): split it into routes per domain, or put its "
                           "functions in one domain")


def _compile_path(path: str, where: str) -> tuple[re.Pattern[str], tuple[tuple[str, Callable[[str], Any]], ...]]:
    pattern, names, last = "", [], 0
    converters = []
    for found in _PARAM.finditer(path):
        name, kind = found.group(1), found.group(2) or "str"
        if name in names:
            raise RoutingError(f"{where}: path parameter {name!r} appears twice")
        if kind not in CONVERTERS:
            raise RoutingError(f"{where}: path parameter {name!r} has unknown type {kind!r} "
                               f"(known: {', '.join(CONVERTERS)})")
        names.append(name)
        regex, convert = CONVERTERS[kind]
        if convert is not str:
            converters.append((name, convert))
        pattern += re.escape(path[last : found.start()]) + f"(?P<{name}>{regex})"
        last = found.end()
    rest = path[last:]
    if "{" in rest or "}" in rest:
        raise RoutingError(f"{where}: malformed path parameter in {path!r}")
    return re.compile(pattern + re.escape(rest)), tuple(converters)
