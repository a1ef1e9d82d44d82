"""What every ``spright`` command prints with: the consoles, an error's exit, the node asked about."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from spright.host.nodefile import NodeFile
from spright.ops.nodes import NodeNotFound, choose_node

console = Console()
errors = Console(stderr=True)
NODE_HELP = "Inspect the node with this supervisor pid (when several run)."
PORT_HELP = "Inspect the node serving this HTTP port (when several run)."


def fail(message: str) -> typer.Exit:
    """Say ``message`` on stderr; the exit (code 2) to raise."""
    # escaped: rich would take "[grpc]" in "pip install 'spright[grpc]'" for markup and drop it
    errors.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(2)


def chosen_node(pid: int | None, port: int | None) -> NodeFile:
    """The running node to inspect; exits 1 (none running) or 2 (ambiguous) saying why."""
    try:
        return choose_node(pid, port)
    except NodeNotFound as exc:
        (console if exc.exit_code == 1 else errors).print(str(exc), markup=False, highlight=False)
        raise typer.Exit(exc.exit_code) from None
