"""``python -m apps.wordstream [--host 127.0.0.1] [--port 8080] [--transport auto|skmsg|...]``."""

from __future__ import annotations

from apps.serve import serve


def main(argv: list[str] | None = None) -> None:
    """Serve wordstream: the gateway plus one worker process per function."""
    serve("apps.wordstream:app", "python -m apps.wordstream",
          "Serve wordstream: words streamed over Server-Sent Events to a browser page.", argv)


if __name__ == "__main__":
    main()
