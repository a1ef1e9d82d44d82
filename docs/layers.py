"""Draw spright's layers (docs/layers.png) and write the module map in docs/architecture.md,
both from what is true: the layers of the import-linter contract in pyproject.toml (which
`make lint` enforces) and each module's own docstring.

    .venv/bin/python docs/layers.py           # redraw the picture, rewrite the map
    .venv/bin/python docs/layers.py --check   # exit 1 when the map in architecture.md is stale
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PICTURE = ROOT / "docs" / "layers.png"
BEGIN, END = "<!-- layers: written by docs/layers.py -->", "<!-- /layers -->"


def layers() -> list[str]:
    """The contract's layers, top first."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = (c for c in config["contracts"] if c["type"] == "layers")
    return list(contract["layers"])


def summary(path: Path) -> str:
    """The first sentence of a module's docstring, on one line."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(docstring.split())
    return text.split(". ")[0].rstrip(".")


def modules(layer: str) -> list[tuple[str, str]]:
    """(module path under spright/, summary) of every module of ``layer``, sub-packages included."""
    base = ROOT / "spright"
    if (base / f"{layer}.py").exists():
        return [(f"{layer}.py", summary(base / f"{layer}.py"))]
    found = []
    for path in sorted((base / layer).rglob("*.py")):
        relative = path.relative_to(base).as_posix()
        if path.name != "__init__.py" or path.parent != base / layer:
            found.append((relative, summary(path)))
    return found


def short(name: str, layer: str) -> str:
    """``ops/deploy/k8s.py`` -> ``deploy/k8s``; a sub-package's ``__init__.py`` -> its name."""
    path = Path(name).relative_to(layer) if name != f"{layer}.py" else Path(name)
    return (path.parent if path.stem == "__init__" else path.with_suffix("")).as_posix()


def module_map() -> str:
    lines = [BEGIN, "```"]
    for layer in layers():
        package = ROOT / "spright" / layer / "__init__.py"
        lines.append(f"{layer}: {summary(package).split(': ', 1)[-1]}" if package.exists() else f"{layer}:")
        for name, text in modules(layer):
            lines.append(f"  {name:<30} {text}")
    lines += ["```", END]
    return "\n".join(lines)


def with_map(doc: str) -> str:
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    return doc[:start] + module_map() + doc[end:]


def draw() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = layers()
    figure, axes = plt.subplots(figsize=(9, 0.62 * len(names) + 0.6))
    for row, layer in enumerate(names):
        y = len(names) - 1 - row
        axes.add_patch(plt.Rectangle((0, y + 0.08), 10, 0.84, facecolor=plt.cm.Blues(0.25 + 0.06 * y),
                                     edgecolor="#335"))
        axes.text(0.15, y + 0.5, layer, va="center", fontsize=11, fontweight="bold")
        members = ", ".join(short(name, layer) for name, _ in modules(layer))
        axes.text(1.6, y + 0.5, members, va="center", fontsize=7.5, wrap=True)
    axes.set_xlim(0, 10)
    axes.set_ylim(0, len(names))
    axes.axis("off")
    axes.set_title("spright's layers: each imports only those below it (make lint checks it)", fontsize=10)
    figure.tight_layout()
    figure.savefig(PICTURE, dpi=110)


def main() -> int:
    doc = DOC.read_text()
    if "--check" in sys.argv:
        if with_map(doc) != doc:
            print("docs/architecture.md's module map is stale: run docs/layers.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(with_map(doc))
    draw()
    return 0


if __name__ == "__main__":
    sys.exit(main())
