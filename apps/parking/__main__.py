"""``python -m apps.parking [--host 127.0.0.1] [--port 8080] [--transport auto|skmsg|...] [--data-dir DIR]
[--plate-format uk|us|any]``."""

from __future__ import annotations

from apps.parking.plates import FORMAT_ENV, FORMATS
from apps.serve import serve


def main(argv: list[str] | None = None) -> None:
    """Serve parking detection & charging: the gateway plus one worker process per function."""
    serve("apps.parking:app", "python -m apps.parking",
          "Serve parking detection & charging: the gateway plus one worker per function.", argv,
          settings={"--plate-format": (FORMAT_ENV, list(FORMATS), "the licence plates read and registered")})


if __name__ == "__main__":
    main()
