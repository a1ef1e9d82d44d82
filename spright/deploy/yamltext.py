"""A small block-style YAML writer for manifests: plain dicts, lists, str, int, bool, None.

Why not PyYAML: it is not a dependency of spright, and it cannot write comments, which the
manifests use to say why each privilege is there. ``Note(value, "why")`` writes ``value  # why``
(a scalar or a mapping key's value); a ``str`` that YAML could read as anything but that string
(``yes``, ``1.0``, ``null``, ``a: b``, ``#x``...) is written double-quoted, anything but printable
ASCII escaped, which YAML reads back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Note", "dump", "dump_all", "plain"]

_PLAIN = re.compile(r"[A-Za-z_/$][A-Za-z0-9_./$()-]*")  # starts with no indicator, holds no ': ' or ' #'
# strings YAML 1.1 or 1.2 resolvers read as booleans or null, whatever their case
MAX_KEY = 1024  # YAML's limit on an implicit key
_RESERVED = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"})


@dataclass(frozen=True)
class Note:
    """``value`` followed by a ``# comment`` on its line (on the key's line for a collection)."""

    value: Any
    comment: str


def plain(value: Any) -> Any:
    """``value`` with every Note replaced by what it wraps: the data a YAML reader gets back."""
    if isinstance(value, Note):
        return plain(value.value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return _quoted(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as YAML")


def _quoted(text: str) -> str:
    """A double-quoted YAML scalar: printable ASCII as is, everything else escaped."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _comment(text: str) -> str:
    if not text.isprintable():
        raise ValueError(f"a YAML comment is one printable line: {text!r}")
    return f"  # {text}"


def _is_empty_collection(value: Any) -> bool:
    return isinstance(value, dict | list | tuple) and not value


def _empty(value: Any) -> str:
    return "{}" if isinstance(value, dict) else "[]"


def _lines(value: Any, indent: int) -> list[str]:
    """The lines of a non-empty collection, each indented by ``indent`` spaces."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"mapping keys must be str, got {key!r}")
            note = ""
            if isinstance(item, Note):
                note, item = _comment(item.comment), item.value
            written = _scalar(key)
            if len(written) > MAX_KEY:
                raise ValueError(f"a mapping key YAML can read is at most {MAX_KEY} characters: {key[:40]!r}...")
            head = f"{pad}{written}:"
            if isinstance(item, dict | list | tuple) and item:
                out.append(head + note)
                # a list under a key is written at the key's indent, as kubectl does
                out.extend(_lines(item, indent if isinstance(item, list | tuple) else indent + 2))
            else:
                out.append(f"{head} {_empty(item) if _is_empty_collection(item) else _scalar(item)}{note}")
        return out
    for item in value:
        note = ""
        if isinstance(item, Note):
            note, item = _comment(item.comment), item.value
        if isinstance(item, dict | list | tuple) and item:
            inner = _lines(item, indent + 2)
            first = inner[0][indent + 2 :]
            out.append(f"{pad}- {first}{note}" if not note or isinstance(item, dict) else f"{pad}-{note}")
            if note and not isinstance(item, dict):
                out.extend(inner)
            else:
                out.extend(inner[1:])
        else:
            out.append(f"{pad}- {_empty(item) if _is_empty_collection(item) else _scalar(item)}{note}")
    return out


def dump(document: dict[str, Any], header: Iterable[str] = ()) -> str:
    """One YAML document (a mapping), after ``header`` comment lines."""
    if not isinstance(document, dict) or not document:
        raise TypeError("a manifest document is a non-empty mapping")
    lines = [f"# {line}".rstrip() for line in header]
    return "\n".join([*lines, *_lines(document, 0)]) + "\n"


def dump_all(documents: Iterable[dict[str, Any]], header: Iterable[str] = ()) -> str:
    """Several documents, separated by ``---``."""
    parts = [dump(document) for document in documents]
    if not parts:
        raise ValueError("no documents to write")
    head = "".join(f"# {line}".rstrip() + "\n" for line in header)
    return head + "---\n".join(parts)
