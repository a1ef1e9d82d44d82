"""The ``spright`` command: run a node, show its routes, diagnose the machine."""

from __future__ import annotations

import logging
import sys

import orjson
import typer
from rich.console import Console
from rich.table import Table

from spright.loader import AppNotFound, load_app
from spright.routing import RoutingError
from spright.transport import registry

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Serverless function chains over shared memory.")
console = Console()
errors = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


@cli.command()
def run(
    app: str = typer.Argument(..., help="MODULE or MODULE:APP, e.g. examples.echo:app"),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="HTTP port."),
    transport: str = typer.Option("auto", help="auto, " + ", ".join(registry())),
) -> None:
    """Serve APP: gateway plus one worker process per function."""
    from spright.supervisor import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        supervisor = Supervisor(app, host=host, port=port, transport=transport)
    except (AppNotFound, RoutingError) as exc:
        raise _fail(str(exc)) from None
    try:
        supervisor.run()
    except (RuntimeError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None


@cli.command()
def routes(
    app: str = typer.Argument(..., help="MODULE or MODULE:APP"),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the compiled route table: route, method, path, chain of function names and ids."""
    try:
        table = load_app(app).compile()
    except (AppNotFound, RoutingError) as exc:
        raise _fail(str(exc)) from None
    rows = table.describe()
    if json:
        functions = [{"id": f.id, "name": f.name, "concurrency": f.concurrency} for f in table.functions]
        sys.stdout.write(orjson.dumps({"functions": functions, "routes": rows}, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    grid = Table(title=f"routes of {app}")
    for column in ("method", "path", "chain id", "hops (id:name)", "timeout"):
        grid.add_column(column)
    for row in rows:
        hops = " → ".join(f"{hop['id']}:{hop['name']}" for hop in row["hops"])
        grid.add_row(row["method"], row["path"], str(row["chain"]), hops, f"{row['timeout']:g}s")
    console.print(grid)


@cli.command()
def doctor() -> None:
    """Which data planes this machine supports, and how to fix the ones it does not."""
    grid = Table(title="spright transports")
    grid.add_column("transport")
    grid.add_column("status")
    grid.add_column("details")
    usable = []
    for name, cls in registry().items():
        reason = cls.unavailable_reason()
        if reason is None:
            usable.append(name)
        grid.add_row(name, "[green]ok[/]" if reason is None else "[red]unavailable[/]", reason or "")
    console.print(grid)
    console.print(f"--transport auto would use: [bold]{usable[0] if usable else 'nothing'}[/]")


def main() -> None:
    cli()
