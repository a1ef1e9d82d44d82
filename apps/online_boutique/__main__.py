"""``python -m apps.online_boutique [--host 127.0.0.1] [--port 8080] [--transport auto|skmsg|unix]``."""

from __future__ import annotations

import argparse
import logging

from spright.supervisor import Supervisor

APP_REF = "apps.online_boutique:app"


def main(argv: list[str] | None = None) -> None:
    """Serve the shop: the gateway plus one worker process per service."""
    parser = argparse.ArgumentParser(prog="python -m apps.online_boutique",
                                     description="Serve Online Boutique: the gateway plus one worker per service.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument("--transport", default="auto", help="auto, skmsg or unix (default auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    Supervisor(APP_REF, host=args.host, port=args.port, transport=args.transport).run()


if __name__ == "__main__":
    main()
