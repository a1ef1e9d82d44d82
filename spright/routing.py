"""The DSL: register functions, map HTTP routes to chains, compile one route table.

Routing is plain data: the compiled ``RouteTable`` (function ids, hop lists, routes) is what
every transport consumes, what ``spright routes`` prints and, on the eBPF data plane, what
is written into the kernel's maps.

A layer of its own (import-linter's contract in pyproject.toml): it may import spright.worker
(the handler of ``App.remote``) and the layers below it; the front door and the node read it.
"""

from __future__ import annotations

import inspect
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

from spright.data.autoscale import ScalePolicy
from spright.data.config import Config, PoolConfig
from spright.data.descriptor import GATEWAY
from spright.data.function import Chain, Function, Handler
from spright.data.table import (
    BUILTIN_CHAIN,
    BUILTINS,
    MAX_CHAINS,
    MAX_GATEWAYS,
    MAX_HOPS,
    REVISION_SLOTS,
    FunctionEntry,
    RouteEntry,
    RouteTable,
)
from spright.host.pool import MAX_DOMAINS

REMOTE_PROCESS = "remote"  # the worker process of every App.remote function
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


class RoutingError(ValueError):
    """A mistake in the app's declaration, reported at startup."""


ChainSpec = Function | Chain | str | Iterable[Function | str]


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
        self._routes: list[tuple[str, str, ChainSpec, float | None]] = []  # timeout None: the node's default

    @overload
    def function(self, name: Handler, /) -> Function: ...

    @overload
    def function(self, name: str | None = None, **options: Any) -> Callable[[Handler], Function]: ...

    def function(self, name: str | Handler | None = None, **options: Any) -> Function | Callable[[Handler], Function]:
        """Decorator form of ``add_function`` (same options): ``@app.function()``, with options,
        or bare ``@app.function`` (as ``@dataclass`` may be), which registers the handler."""
        if callable(name):
            return self.add_function(name, **options)
        if name is not None and not isinstance(name, str):
            raise RoutingError(f"@app.function takes a function name (str) or decorates a handler, not {name!r}")
        return lambda handler: self.add_function(handler, name=name, **options)

    def add_function(
        self,
        handler: Handler,
        *,
        name: str | None = None,
        concurrency: int = 64,
        domain: str | None = None,
        process: str | None = None,
        instances: int = 1,
        max_instances: int | None = None,
        stateful: bool = False,
        autoscale: ScalePolicy | None = None,
        stream_body: bool = False,
    ) -> Function:
        """Register ``handler``. ``domain`` isolates it from functions of other domains;
        functions naming the same ``process`` share one worker process: hops between them
        skip the cross-process wake-up (they still go through the data plane, and keep their
        own endpoint, counters and domain), at the price of failing together.
        ``instances``: worker processes serving it, the data plane spreading its requests
        and calls over them; ``max_instances`` (default: ``instances``) how many it may grow
        to while running. ``stateful``: its state lives in its process, so it runs as exactly
        one instance (asking for more is a startup error). ``autoscale``: the supervisor
        scales it between the policy's min and max instances (Knative's KPA, spright.data.autoscale).
        ``stream_body``: its handler reads the request body as the gateway receives it
        (``async for chunk in ctx.stream()``), not whole in ``ctx.body``: a body past
        ``max_body`` may then pass (up to ``Config.max_stream_body``); it must be the first
        function of every chain it is in."""
        name = name or str(getattr(handler, "__name__", ""))
        if not callable(handler):
            raise RoutingError(f"function {name!r}: handler {handler!r} is not callable")
        if inspect.isgeneratorfunction(handler):  # its parts would be sent from a loop it blocks
            raise RoutingError(f"function {name!r}: its handler is a generator function: stream its answer from an "
                               f"async generator (`async def {name}(ctx): yield ...`), or return it whole")
        if not _NAME.match(name):
            raise RoutingError(f"function name {name!r} must be an identifier-like name (letters, digits, _ . -)")
        if name in self.functions:
            raise RoutingError(f"function {name!r} is registered twice")
        if concurrency < 1:
            raise RoutingError(f"function {name!r}: concurrency must be >= 1, got {concurrency}")
        if not isinstance(stream_body, bool):
            raise RoutingError(f"function {name!r}: stream_body is True or False, got {stream_body!r}")
        for kind, value in (("domain", domain), ("process", process)):
            if value is not None and not _NAME.match(value):
                raise RoutingError(f"function {name!r}: {kind} {value!r} must be an identifier-like name")
        most = instances if max_instances is None else max_instances
        if autoscale is not None:
            if autoscale.min_instances == 0 and stateful:
                raise RoutingError(f"function {name!r} is stateful (its state lives in its process): it cannot "
                                   f"scale to zero (min_instances=0)")
            most = max(most, autoscale.max_instances)
            instances = min(max(instances, autoscale.min_instances), autoscale.max_instances)
        if not 1 <= instances <= most:
            raise RoutingError(f"function {name!r}: instances must be 1..max_instances ({most}), got {instances}")
        if stateful and most > 1:
            raise RoutingError(f"function {name!r} is stateful (its state lives in its process): it runs as one "
                               f"instance, not {most}")
        function = self.functions[name] = Function(name, handler, concurrency, domain, process, instances, most,
                                                   stateful, autoscale, stream_body)
        return function

    def route(
        self, path: str, chain: ChainSpec, *, methods: Iterable[str] = ("GET",), timeout: float | None = None
    ) -> None:
        """Map ``path`` (``/product/{id}``, ``{n:int}``, ``{rest:path}``) to a chain."""
        if isinstance(methods, str):
            methods = (methods,)
        if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
            raise RoutingError(f"route {path}: timeout must be a positive number of seconds, got {timeout!r}")
        for method in methods:
            self._routes.append((method.upper(), path, chain, timeout))

    def remote(self, name: str, url: str, *, domain: str | None = None) -> Function:
        """Function ``name`` served by the node at ``url`` (``http://HOST:PORT``, which
        ``expose``s it): chains and calls name it as any other; its hop travels over HTTP
        (spright.worker.remote). The remote functions of a domain share one worker process, ``remote``."""
        from spright.worker.remote import RemoteFunction, parse_url

        try:
            parse_url(url)
        except ValueError as exc:
            raise RoutingError(f"remote function {name!r}: {exc}") from None
        process = REMOTE_PROCESS if domain is None else f"{REMOTE_PROCESS}-{domain}"  # a process hosts one domain
        return self.add_function(RemoteFunction(name, url), name=name, domain=domain, process=process,
                                 concurrency=1024)

    def with_remotes(self, remotes: Mapping[str, str]) -> App:
        """This app as one node of several runs it: the functions ``remotes`` names are served
        by the node at their URL (``remote``), the others here, exposed to the other nodes;
        routes as they are (their remote hops leave the node)."""
        unknown = sorted(set(remotes) - set(self.functions))
        if unknown:
            raise RoutingError(f"remotes name no function of app {self.name!r}: {', '.join(unknown)}")
        node = App(self.name, config=self.config)
        for name, function in self.functions.items():
            if name in remotes:
                node.remote(name, remotes[name], domain=function.domain)
            else:
                node.functions[name] = function
        node._routes = list(self._routes)
        node.expose(*(name for name in self.functions if name not in remotes))
        return node

    def expose(self, *functions: Function | str) -> None:
        """Let other nodes call these functions (``App.remote`` there): ``POST
        /.spright/call/NAME`` runs the function on the body and answers its result."""
        from spright.worker.remote import CALL_PATH

        routed = {(method, path) for method, path, _, _ in self._routes}
        for function in functions:
            name = function.name if isinstance(function, Function) else function
            if ("POST", CALL_PATH + name) not in routed:
                self.route(CALL_PATH + name, name, methods=["POST"])

    def compile(self, instances: Mapping[str, int] | None = None, gateways: int = 1, *,
                default_timeout: float | None = None) -> RouteTable:
        """The route table; ``instances``: function name -> instances to start with, over what
        the app declares (``spright run --instances NAME=N``); ``gateways``: gateway processes;
        ``default_timeout``: of the routes that name none (default: the app's config)."""
        default_timeout = default_timeout or self.config.default_timeout
        if not 1 <= gateways <= MAX_GATEWAYS:
            raise RoutingError(f"gateways must be 1..{MAX_GATEWAYS}, got {gateways}")
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
        counts = _instance_counts(self, instances or {})
        extra = len(ids) + 1  # the endpoint ids of instances past the first come after the functions'
        entries = []
        for f in self.functions.values():
            count, most = counts[f.name]
            entries.append(FunctionEntry(ids[f.name], f.name, f.concurrency, domains.index(f.domain or self.name),
                                         f.process or f.name, count,
                                         (ids[f.name], *range(extra, extra + REVISION_SLOTS * most - 1)),
                                         _scales_to_zero(f)))
            extra += REVISION_SLOTS * most - 1
        functions = tuple(entries)
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
            if len(names) >= MAX_HOPS:
                raise RoutingError(f"{where}: the chain has {len(names)} hops; a chain holds at most {MAX_HOPS - 1} "
                                   f"on every data plane (with the gateway's, {MAX_HOPS} positions)")
            _check_one_domain(names, functions, ids, domains, where)
            for position, name in enumerate(names[1:], start=2):
                if self.functions[name].stream_body:
                    raise RoutingError(f"{where}: function {name!r} reads its body as it arrives (stream_body=True), "
                                       f"so it must be the chain's first function, not hop {position}: only the "
                                       "first gets the request's body from the gateway")
            timeout = timeout or default_timeout
            chain = ((*(ids[name] for name in names), GATEWAY), timeout)
            if chain not in chains:
                if len(chains) == MAX_CHAINS:
                    raise RoutingError(f"{where}: the app's routes make more than {MAX_CHAINS} distinct chains "
                                       "(hops and timeout), the most every data plane holds")
                chains.append(chain)
            pattern, converters = _compile_path(path, where)
            routes.append(RouteEntry(method, path, chains.index(chain), timeout, pattern, len(routes), converters,
                                     stream_body=self.functions[names[0]].stream_body))
        for (method, path), page in BUILTINS.items():
            if (method, path) not in seen:
                pattern, _ = _compile_path(path, page)
                routes.append(RouteEntry(method, path, BUILTIN_CHAIN, 0.0, pattern, len(routes), builtin=page))
        return RouteTable(functions, tuple(hops for hops, _ in chains), tuple(routes), tuple(domains),
                          tuple(timeout for _, timeout in chains), (GATEWAY, *range(extra, extra + gateways - 1)))

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


def _instance_counts(app: App, asked: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Per function: (instances to start, most it may have), ``asked`` over the app's own."""
    unknown = sorted(set(asked) - set(app.functions))
    if unknown:
        raise RoutingError(f"--instances names no function of app {app.name!r}: {', '.join(unknown)}")
    sharing: dict[str, int] = {}
    for f in app.functions.values():
        sharing[f.process or f.name] = sharing.get(f.process or f.name, 0) + 1
    counts = {}
    for f in app.functions.values():
        count = asked.get(f.name, f.instances)
        most = max(f.max_instances, count)
        where = f"function {f.name!r}"
        if count < 1:
            raise RoutingError(f"{where}: instances must be >= 1, got {count}")
        if f.stateful and count > 1:
            raise RoutingError(f"{where} is stateful (its state lives in its process): it runs as one instance, "
                               f"not {count}")
        if (most > 1 or _scales_to_zero(f)) and sharing[f.process or f.name] > 1:
            raise RoutingError(f"{where} shares process {f.process!r} with other functions: only a function "
                               f"alone in its process can run as several instances, or none")
        counts[f.name] = (count, most)
    return counts


def _scales_to_zero(function: Function) -> bool:
    return function.autoscale is not None and function.autoscale.min_instances == 0
