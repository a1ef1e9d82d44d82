"""The shared ``python -m apps.<name>`` command of the motion and parking apps."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from spright.supervisor import Supervisor


def serve(app_ref: str, prog: str, description: str, argv: list[str] | None = None) -> None:
    """Parse ``--host --port --transport --data-dir`` and run the node until Ctrl-C/SIGTERM."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument("--transport", default="auto", help="auto, skmsg or unix (default auto)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the SQLite database here (default: the node's runtime directory, "
                             "removed when the node stops)")
    args = parser.parse_args(argv)
    if args.data_dir is not None:  # the workers are spawned: they inherit the environment
        args.data_dir.mkdir(parents=True, exist_ok=True)
        os.environ["SPRIGHT_DATA_DIR"] = str(args.data_dir.resolve())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    Supervisor(app_ref, host=args.host, port=args.port, transport=args.transport).run()
