"""The ``spright`` commands that change a running node, through its control socket
(spright.node.control): scale a function, reload code, roll a canary out."""

from __future__ import annotations

from typing import Any

import typer

from spright.host.nodefile import runtime_base
from spright.node import control
from spright.ops.console import NODE_HELP, PORT_HELP, chosen_node, fail

NODE = typer.Option(None, "--node", help=NODE_HELP)
PORT = typer.Option(None, "--port", help=PORT_HELP)
FUNCTIONS = typer.Argument(None, help="The functions to reload (default: every one).")


def scale(
    function: str = typer.Argument(..., help="The function to scale."),
    instances: int = typer.Argument(..., help="How many instances it should run."),
    node: int | None = NODE,
    port: int | None = PORT,
) -> None:
    """Run FUNCTION of the running node as INSTANCES worker processes, live: new ones join once
    they serve, leaving ones stop taking work, then drain."""
    answer = _ask(node, port, {"scale": function, "instances": instances})
    typer.echo(f"{function}: {answer['instances']} instances")


def reload(
    functions: list[str] | None = FUNCTIONS,
    node: int | None = NODE,
    port: int | None = PORT,
) -> None:
    """Reload the code of FUNCTIONS with no request lost: new workers start on the code as it
    is now, take the traffic once they serve, and the old ones drain and stop. Refused, the old
    code serving on, when the new code does not load or changes the routes (as SIGHUP does)."""
    answer = _ask(node, port, {"reload": functions or []})
    typer.echo(f"reloaded {', '.join(answer['reloaded'])}: revision {answer['revision']} serves")


def rollout(
    function: str = typer.Argument(..., help="The function to roll a new revision of out."),
    module: str = typer.Option(None, "--module", help="The new revision's app (MODULE[:APP]; default: the "
                                                      "node's, as its files are now)."),
    traffic: int = typer.Option(None, "--traffic", min=0, max=100, help="Percent of FUNCTION's requests and "
                                                                        "calls the new revision takes."),
    promote: bool = typer.Option(False, "--promote", help="The new revision takes all of it; the old one stops."),
    rollback: bool = typer.Option(False, "--rollback", help="The new revision stops; the old one takes it all."),
    node: int | None = NODE,
    port: int | None = PORT,
) -> None:
    """A canary: start FUNCTION's new revision beside the serving one and give it --traffic
    percent (again, to change it); then --promote or --rollback it."""
    if promote and rollback:
        raise fail("--promote or --rollback, not both")
    if promote or rollback:
        answer = _ask(node, port, {"rollout": function, "promote": promote})
        typer.echo(f"{function}: revision {answer['revision']} serves")
        return
    if traffic is None:
        raise fail("say how much traffic the new revision takes (--traffic PERCENT), or --promote / --rollback")
    answer = _ask(node, port, {"rollout": function, "module": module, "traffic": traffic})
    typer.echo(f"{function}: the new revision takes {answer['share']}% of its traffic")


def _ask(node: int | None, port: int | None, request: dict[str, Any]) -> dict[str, Any]:
    chosen = chosen_node(node, port)
    try:
        answer = control.request(runtime_base() / str(chosen.pid), request, timeout=300)
    except OSError as exc:
        raise fail(f"cannot reach {chosen.describe()}: {exc}") from None
    if "error" in answer:
        raise fail(answer["error"])
    return answer
