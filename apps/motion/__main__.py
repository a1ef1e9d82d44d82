"""``python -m apps.motion [--host 127.0.0.1] [--port 8080] [--transport auto|skmsg|...] [--data-dir DIR]``."""

from __future__ import annotations

from apps.serve import serve


def main(argv: list[str] | None = None) -> None:
    """Serve motion detection: the gateway plus one worker process per function."""
    serve("apps.motion:app", "python -m apps.motion",
          "Serve motion detection: the gateway plus one worker per function.", argv)


if __name__ == "__main__":
    main()
