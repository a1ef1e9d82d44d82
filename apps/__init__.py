"""Applications built on spright; each runs as ``python -m apps.<name>``."""
