"""The shared ``python -m apps.<name>`` command: the node's options as ``spright run`` has them."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from apps.datadir import REDIS_ENV
from spright.node.supervisor import Supervisor
from spright.transport import registry


def serve(app_ref: str, prog: str, description: str, argv: list[str] | None = None, *,
          redis: bool = False, settings: dict[str, tuple[str, list[str], str]] | None = None) -> None:
    """Parse ``--host --port --transport``, the data planes' options, ``--data-dir`` (where
    the app's SQLite lives) and, for an app that can keep its state there, ``--redis URL``;
    then run the node until Ctrl-C/SIGTERM. ``settings``: the app's own options, each
    ``--name`` -> (the environment variable its workers read, its choices, help)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument("--transport", default="auto", help=f"auto, {', '.join(registry())} (default auto)")
    parser.add_argument("--poll-idle-us", type=int, default=None,
                        help="poll: sleep after this many µs without a descriptor (default: spin)")
    parser.add_argument("--sidecar", action="store_true", help="http: a queue-proxy-like process per function")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the SQLite database here (default: the node's runtime directory, "
                             "removed when the node stops)")
    if redis:
        parser.add_argument("--redis", default=os.environ.get(REDIS_ENV), metavar="URL",
                            help=f"keep state in this Redis (e.g. redis://127.0.0.1:6379/0; env {REDIS_ENV})")
    for option, (variable, choices, text) in (settings or {}).items():
        parser.add_argument(option, choices=choices, default=os.environ.get(variable, choices[0]),
                            help=f"{text} (env {variable}; default {choices[0]})")
    args = parser.parse_args(argv)
    # the workers are spawned: they inherit the environment
    for option, (variable, _, _) in (settings or {}).items():
        os.environ[variable] = getattr(args, option.lstrip("-").replace("-", "_"))
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        os.environ["SPRIGHT_DATA_DIR"] = str(args.data_dir.resolve())
    if getattr(args, "redis", None):
        os.environ[REDIS_ENV] = args.redis
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        supervisor = Supervisor(app_ref, host=args.host, port=args.port, transport=args.transport,
                                poll_idle_us=args.poll_idle_us, sidecar=args.sidecar)
    except ValueError as exc:
        parser.error(str(exc))
    supervisor.run()
