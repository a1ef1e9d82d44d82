"""Licence plate format: the current UK style ``AB12 CDE`` (two letters, two digits, three letters).

A fixed format is what makes OCR dependable: we know which positions hold letters and which
digits, so the classic confusions (0/O, 1/I, 5/S, 8/B, 2/Z, 6/G) are corrected by position,
and any read that still does not fit the format is rejected rather than charged to a stranger.
I, O and Q never appear, as on real UK plates' random letters, which removes the worst pairs.
"""

from __future__ import annotations

import random
import re

LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q
DIGITS = "0123456789"
PATTERN = re.compile(r"^[A-HJ-NPR-Z]{2}[0-9]{2}[A-HJ-NPR-Z]{3}$")
LAYOUT = "LLDDLLL"  # L: letter, D: digit
WHITELIST = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # tesseract may read I/O/Q: we correct them
_AS_DIGIT = {"O": "0", "Q": "9", "D": "0", "U": "0", "I": "1", "L": "1", "T": "1", "J": "1", "Z": "2", "S": "5",
             "B": "8", "G": "6", "A": "4", "E": "8"}
_AS_LETTER = {"0": "D", "1": "T", "2": "Z", "4": "A", "5": "S", "6": "G", "7": "T", "8": "B", "I": "T", "O": "D",
              "Q": "D"}


def random_plate(rng: random.Random) -> str:
    """A valid plate, e.g. ``KX07 RMN`` without the space."""
    pick = rng.choice
    return "".join(pick(LETTERS) if kind == "L" else pick(DIGITS) for kind in LAYOUT)


def fleet(count: int = 300, seed: int = 2022) -> list[str]:
    """The registered vehicles' plates (the registry is seeded with these), reproducible."""
    rng = random.Random(seed)
    return [random_plate(rng) for _ in range(count)]


def spaced(plate: str) -> str:
    """The printed form: ``AB12CDE`` → ``AB12 CDE``."""
    return f"{plate[:4]} {plate[4:]}"


def is_valid(plate: str) -> bool:
    return bool(PATTERN.match(plate))


def _fit(text: str) -> tuple[str, int] | None:
    """``text`` (7 characters) as a plate and how many characters had to be corrected by position."""
    fixed, changes = [], 0
    for ch, kind in zip(text, LAYOUT, strict=True):
        if kind == "D" and not ch.isdigit():
            ch, changes = _AS_DIGIT.get(ch, ch), changes + 1
        elif kind == "L" and (ch.isdigit() or ch not in LETTERS):
            ch, changes = _AS_LETTER.get(ch, ch), changes + 1
        fixed.append(ch)
    plate = "".join(fixed)
    return (plate, changes) if is_valid(plate) else None


def normalise(raw: str) -> str | None:
    """Turn an OCR read into a plate (see ``repair``); None if impossible or ambiguous."""
    fit = repair(raw)
    return fit[0] if fit else None


def repair(raw: str) -> tuple[str, int] | None:
    """An OCR read as (plate, corrections made), fixing letter/digit confusions by position.

    Whitespace and punctuation are dropped. OCR's typical slips are repaired too: one glyph read
    as two (``RC9O5HNK``: one extra character) and a rim read as ``I`` at either end (a 7-character
    window). Among the repairs the one needing the fewest corrections wins; two repairs tying
    is ambiguous, and an ambiguous read is rejected rather than charged to the wrong car.
    """
    text = "".join(ch for ch in raw.upper() if ch.isalnum())
    size = len(LAYOUT)
    if len(text) == size:
        return _fit(text)
    options: dict[str, int] = {}
    if len(text) == size + 1:
        variants = [text[:i] + text[i + 1:] for i in range(len(text))]
    elif size + 1 < len(text) <= size + 2:
        variants = [text[i:i + size] for i in range(len(text) - size + 1)]
    else:
        return None
    for variant in variants:
        fit = _fit(variant)
        if fit is not None:
            options[fit[0]] = min(fit[1], options.get(fit[0], size))
    if not options:
        return None
    best = min(options.values())
    winners = [plate for plate, changes in options.items() if changes == best]
    return (winners[0], best + 1) if len(winners) == 1 else None  # + 1: dropping a character is a repair too


def clean(text: str) -> str | None:
    """A plate typed by a person (API, registration): upper-cased, spaces dropped; None if invalid."""
    plate = "".join(text.split()).upper()
    return plate if is_valid(plate) else None
