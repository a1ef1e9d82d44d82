"""Finding the nodes running on this machine and reading their state, for the CLI.

A node announces itself with ``<runtime_base()>/<pid>/node.json`` (written by the
supervisor once it serves, removed when it exits); a file whose pid is gone is a node that
was SIGKILLed and is ignored. Everything here reads: counters come from the node's
shared-memory table and from the data plane itself, never by asking the node over HTTP,
so ``spright stats`` works even while the gateway is saturated.
"""

from __future__ import annotations

from typing import Any

from spright.host.counters import FUNCTION_COLUMNS, REQUESTS, RESPONSES, read_segments, row_dict
from spright.host.nodefile import NodeFile, own_node, running_nodes
from spright.transport import registry
from spright.transport.base import Transport


class NodeNotFound(Exception):
    """No node (exit 1) or no single node matching the selection (exit 2); says which."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def choose_node(pid: int | None = None, port: int | None = None) -> NodeFile:
    """The node the user means: the one ``pid``/``port`` names, else the one ``$SPRIGHT_NODE_DIR``
    names (inside a pod or a node's own process), else the only one running."""
    if pid is None and port is None and (own := own_node()) is not None:
        return own
    nodes = running_nodes()
    if not nodes:
        raise NodeNotFound("no spright node is running on this machine", 1)
    chosen = [n for n in nodes if (pid is None or n.pid == pid) and (port is None or n.port == port)]
    if len(chosen) == 1:
        return chosen[0]
    listing = "\n".join(f"  {node.describe()}" for node in nodes)
    if not chosen:
        wanted = " and ".join(f"{k} {v}" for k, v in (("pid", pid), ("port", port)) if v is not None)
        raise NodeNotFound(f"no running spright node has {wanted}; running:\n{listing}", 2)
    raise NodeNotFound(f"{len(nodes)} spright nodes are running; choose one with --node PID or --port PORT:\n"
                       f"{listing}", 2)


def _endpoints(node: NodeFile) -> list[dict[str, Any]]:
    """The gateway and each function, with the endpoint ids of its instances."""
    return [{"id": 0, "name": "gateway", "domain": "gateway", "endpoints": node.gateways},
            *({"id": f["id"], "name": f["name"], "domain": f["domain"], "process": f["process"],
               "endpoints": f.get("endpoints", [f["id"]])} for f in node.functions)]


def _added(rows: list[list[int]], endpoints: list[int]) -> list[int]:
    return [sum(column) for column in zip(*(rows[e] for e in endpoints), strict=True)]


def _transport_class(node: NodeFile) -> type[Transport] | None:
    return registry().get(node.transport)


def snapshot(node: NodeFile) -> dict[str, Any]:
    """Counters of every endpoint right now: userspace (all transports) and, when the data
    plane keeps its own, the kernel's under ``kernel``. The gateway's row lags by one tick."""
    rows = read_segments(node.metrics.segments, node.metrics.rows)
    transport = _transport_class(node)
    try:
        kernel = transport.live_counters(node.transport_info) if transport is not None else None
    except OSError:  # e.g. not allowed to read the BPF maps: the userspace counters still stand
        kernel = None
    functions = []
    for endpoint in _endpoints(node):
        ids = endpoint.pop("endpoints")
        process = endpoint.pop("process", "")
        entry: dict[str, Any] = {**endpoint, **row_dict(_added(rows, ids)[: len(FUNCTION_COLUMNS)], False)}
        if endpoint["id"]:
            entry["instances_running"] = sum(1 for name in node.workers if name.partition("#")[0] == endpoint["name"])
        if len(ids) > 1:  # each instance's own counters too
            entry["instances"] = [{"endpoint": e, **row_dict(rows[e][: len(FUNCTION_COLUMNS)], False)} for e in ids]
        revisions = node.revisions.get(process, [])
        if len(revisions) > 1:  # a canary, or a revision still leaving: side by side
            entry["revisions"] = [
                {key: revision[key] for key in ("revision", "role", "app", "share")}
                | row_dict(_added(rows, revision["endpoints"][endpoint["name"]])[: len(FUNCTION_COLUMNS)], False)
                for revision in revisions]
        if kernel is not None:
            entry["kernel"] = {}
            for e in ids:
                for key, value in kernel.get(e, {}).items():
                    entry["kernel"][key] = entry["kernel"].get(key, 0) + value
        functions.append(entry)
    gateway = _added(rows, node.gateways)
    return {
        "node": {"pid": node.pid, "app": node.app, "port": node.port, "transport": node.transport},
        "requests": gateway[REQUESTS],
        "responses": {f"{cls}xx": gateway[RESPONSES + cls] for cls in range(1, 6)},
        "kernel_counters": kernel is not None,
        "functions": functions,
        "scaling": node.scaling,  # the autoscaler's last decisions, newest last
        "gateways": [{"endpoint": e, "requests": rows[e][REQUESTS]} for e in node.gateways],
    }


def live_routes(node: NodeFile) -> dict[str, Any]:
    """The running node's route table: read back from the data plane when it holds one (the
    BPF map, for skmsg), else the compiled table the supervisor wrote into node.json."""
    rows = [dict(row) for row in node.routes]
    names = {endpoint["id"]: endpoint["name"] for endpoint in _endpoints(node)}
    transport = _transport_class(node)
    chains = transport.live_routes(node.transport_info) if transport is not None else None
    if transport is not None and chains is not None:
        source = transport.routes_source
        for row in rows:
            hops = chains.get(row["chain"])
            compiled = [hop["id"] for hop in row["hops"]]
            row["hops"] = [{"id": i, "name": names.get(i, "?")} for i in hops] if hops is not None else []
            # the data plane may or may not keep the final return to the gateway
            row["matches_compiled"] = list(hops or ()) in (compiled, compiled[:-1])
    else:
        source = "node-file"
    return {
        "node": {"pid": node.pid, "app": node.app, "port": node.port, "transport": node.transport},
        "source": source,
        "domains": node.domains,
        "functions": node.functions,
        "routes": rows,
    }
