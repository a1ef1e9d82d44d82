"""Licence plate formats: ``uk`` (``AB12 CDE``, the default), ``us`` (``ABC 1234``) and ``any``.

A fixed layout is what makes OCR dependable: we know which positions hold letters and which
digits, so the classic confusions (0/O, 1/I, 5/S, 8/B, 2/Z, 6/G) are corrected by position, a
few at most (``MAX_CORRECTIONS``); a read that still does not fit, or fits only by rewriting
more of it than that, is rejected rather than charged to a stranger. I, O and Q never appear in
the generated plates' letters, which removes the worst pairs. ``any`` (2 to 8 letters and
digits) knows no positions: nothing is corrected, and a plate is matched by its key (``key``),
in which the glyphs no reader can tell apart are one character (O and Q are 0, I is 1, S is 5,
B is 8, Z is 2, G is 6, in reads and in typed plates alike); the plate itself stays as read.

The format comes from ``SPRIGHT_PLATE_FORMAT`` (``python -m apps.parking --plate-format``).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q
DIGITS = "0123456789"
WHITELIST = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # tesseract may read I/O/Q: we correct them
FORMAT_ENV = "SPRIGHT_PLATE_FORMAT"
MAX_CORRECTIONS = 2  # letter/digit confusions fixed by position in one read; more is another plate
# The any format's canonical form: glyphs OCR confuses, with no position to tell them apart, are
# one character (a plate is matched as a gate's reader would match it)
_SAME_GLYPH = str.maketrans("OIQSBZG", "0105826")
_CANONICAL_LETTERS = "".join(ch for ch in LETTERS if ch not in "SBZG")
_AS_DIGIT = {"O": "0", "Q": "9", "D": "0", "U": "0", "I": "1", "L": "1", "T": "1", "J": "1", "Z": "2", "S": "5",
             "B": "8", "G": "6", "A": "4", "E": "8"}
_AS_LETTER = {"0": "D", "1": "T", "2": "Z", "4": "A", "5": "S", "6": "G", "7": "T", "8": "B", "I": "T", "O": "D",
              "Q": "D"}


@dataclass(frozen=True)
class PlateFormat:
    name: str
    layout: str | None  # L: letter, D: digit; None: any letters and digits
    pattern: re.Pattern[str]
    example: str  # how the format is shown to people, e.g. "AB12 CDE"
    space_at: int | None  # where the printed plate has its space

    @property
    def digits(self) -> slice | None:
        """Where the digit group sits (the OCR reads it apart: see anpr.read_plate)."""
        if self.layout is None:
            return None
        return slice(self.layout.index("D"), self.layout.rindex("D") + 1)


FORMATS = {
    "uk": PlateFormat("uk", "LLDDLLL", re.compile(r"^[A-HJ-NPR-Z]{2}[0-9]{2}[A-HJ-NPR-Z]{3}$"), "AB12 CDE", 4),
    "us": PlateFormat("us", "LLLDDDD", re.compile(r"^[A-HJ-NPR-Z]{3}[0-9]{4}$"), "ABC 1234", 3),
    "any": PlateFormat("any", None, re.compile(r"^[A-Z0-9]{2,8}$"), "2 to 8 letters and digits", None),
}


def current() -> PlateFormat:
    """The format this process reads and registers (``SPRIGHT_PLATE_FORMAT``, uk by default)."""
    name = os.environ.get(FORMAT_ENV, "uk")
    if name not in FORMATS:
        raise ValueError(f"{FORMAT_ENV}={name!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def random_plate(rng: random.Random, fmt: PlateFormat | None = None) -> str:
    """A valid plate of ``fmt``, e.g. ``KX07RMN`` (uk), ``KXR0712`` (us), ``7KX2`` (any)."""
    fmt = fmt or current()
    pick = rng.choice
    layout = fmt.layout or "".join(pick("LD") for _ in range(rng.randint(4, 7)))
    letters = LETTERS if fmt.layout else _CANONICAL_LETTERS
    return "".join(pick(letters) if kind == "L" else pick(DIGITS) for kind in layout)


def fleet(count: int = 300, seed: int = 2022, fmt: PlateFormat | None = None) -> list[str]:
    """The registered vehicles' plates (the registry is seeded with these), reproducible."""
    rng = random.Random(seed)
    return [random_plate(rng, fmt) for _ in range(count)]


def spaced(plate: str, fmt: PlateFormat | None = None) -> str:
    """The printed form: ``AB12CDE`` → ``AB12 CDE`` (uk), ``ABC1234`` → ``ABC 1234`` (us)."""
    at = (fmt or current()).space_at
    return plate if at is None else f"{plate[:at]} {plate[at:]}"


def is_valid(plate: str, fmt: PlateFormat | None = None) -> bool:
    return bool((fmt or current()).pattern.match(plate))


def _fit(text: str, fmt: PlateFormat, layout: str) -> tuple[str, int] | None:
    """``text`` (as long as ``layout``) as a plate and how many characters were corrected by
    position; None when it does not fit or needs more than ``MAX_CORRECTIONS``."""
    fixed, changes = [], 0
    for ch, kind in zip(text, layout, strict=True):
        if kind == "D" and not ch.isdigit():
            ch, changes = _AS_DIGIT.get(ch, ch), changes + 1
        elif kind == "L" and (ch.isdigit() or ch not in LETTERS):
            ch, changes = _AS_LETTER.get(ch, ch), changes + 1
        fixed.append(ch)
    plate = "".join(fixed)
    return (plate, changes) if changes <= MAX_CORRECTIONS and is_valid(plate, fmt) else None


def normalise(raw: str, fmt: PlateFormat | None = None) -> str | None:
    """Turn an OCR read into a plate (see ``repair``); None if impossible or ambiguous."""
    fit = repair(raw, fmt)
    return fit[0] if fit else None


def repair(raw: str, fmt: PlateFormat | None = None) -> tuple[str, int] | None:
    """An OCR read as (plate, corrections made), fixing letter/digit confusions by position.

    Whitespace and punctuation are dropped. OCR's typical slips are repaired too: one glyph read
    as two (``RC9O5HNK``: one extra character) and a rim read as ``I`` at either end (a 7-character
    window). Among the repairs the one needing the fewest corrections wins; two repairs tying
    is ambiguous, and an ambiguous read is rejected rather than charged to the wrong car.
    """
    fmt = fmt or current()
    text = "".join(ch for ch in raw.upper() if ch.isalnum())
    if fmt.layout is None:  # no positions to correct by: the read as it is, or nothing (matched by its key)
        return (text, 0) if is_valid(text, fmt) else None
    layout, size = fmt.layout, len(fmt.layout)
    if len(text) == size:
        return _fit(text, fmt, layout)
    options: dict[str, int] = {}
    if len(text) == size + 1:
        variants = [text[:i] + text[i + 1:] for i in range(len(text))]
    elif size + 1 < len(text) <= size + 2:
        variants = [text[i:i + size] for i in range(len(text) - size + 1)]
    else:
        return None
    for variant in variants:
        fit = _fit(variant, fmt, layout)
        if fit is not None:
            options[fit[0]] = min(fit[1], options.get(fit[0], size))
    if not options:
        return None
    best = min(options.values())
    winners = [plate for plate, changes in options.items() if changes == best]
    return (winners[0], best + 1) if len(winners) == 1 else None  # + 1: dropping a character is a repair too


def clean(text: str, fmt: PlateFormat | None = None) -> str | None:
    """A plate typed by a person (API, registration): upper-cased, spaces dropped; None if invalid."""
    plate = "".join(text.split()).upper()
    return plate if is_valid(plate, fmt) else None


def key(plate: str, fmt: PlateFormat | None = None) -> str:
    """The form a plate is matched by (registry, open stay, sessions): in ``any`` the glyphs OCR
    confuses are one character (``RBW4009`` and ``R8W4009`` are the key ``R8W4009``); in ``uk``
    and ``us`` the plate itself. Only for matching: answers and receipts show the plate as read."""
    return plate.translate(_SAME_GLYPH) if (fmt or current()).layout is None else plate
