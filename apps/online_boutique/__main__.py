"""``python -m apps.online_boutique [--host 127.0.0.1] [--port 8080] [--transport auto|skmsg|...]
[--data-dir DIR] [--redis URL]``."""

from __future__ import annotations

from apps.serve import serve


def main(argv: list[str] | None = None) -> None:
    """Serve the shop: the gateway plus one worker process per service."""
    serve("apps.online_boutique:app", "python -m apps.online_boutique",
          "Serve Online Boutique: the gateway plus one worker per service.", argv, redis=True)


if __name__ == "__main__":
    main()
