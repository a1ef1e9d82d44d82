"""``python -m apps.parking [--host 127.0.0.1] [--port 8080] [--transport auto|skmsg|...] [--data-dir DIR]``."""

from __future__ import annotations

from apps.serve import serve


def main(argv: list[str] | None = None) -> None:
    """Serve parking detection & charging: the gateway plus one worker process per function."""
    serve("apps.parking:app", "python -m apps.parking",
          "Serve parking detection & charging: the gateway plus one worker per function.", argv)


if __name__ == "__main__":
    main()
