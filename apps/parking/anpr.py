"""Plate recognition: find the plate with OpenCV, straighten it, read it with tesseract.

Localisation is classic ANPR (no model to download): a plate is a bright, roughly 4.7:1
rectangle full of dark strokes, so we look for (a) bright rectangles and (b) dense dark-on-light
text regions (black-hat + horizontal gradient + closing), rank the candidates by shape, and
warp each rotated rectangle to an upright crop that keeps its proportions. The crop is
binarised (Otsu), the rim's lines removed, and the characters kept as connected components
that share a height and a top line; they are redrawn as one evenly spaced line.

tesseract (LSTM, Debian's ``eng``) reads that line with a plate-character whitelist, in
``--psm 13`` (raw line): on these crops ``--psm 7`` read markedly worse (it doubled glyphs and
applied word heuristics). Several renderings of the line, and of its digit pair alone, go through
ONE tesseract run; the reads are repaired by position (plates.py) and vote; the first candidate
that yields an agreed, valid plate wins. Measured: 99% exact on 200 rendered cars (apps/parking/README.md)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np
import pytesseract

from apps.media import NotAnImage, decode
from apps.parking.plates import WHITELIST, PlateFormat, current, key, repair

CROP_H = 100  # the upright plate crop's height; its width keeps the plate's proportions
GLYPH_H = 32  # character height in the line handed to tesseract
# psm 13: one raw line, no layout analysis or dictionary: a plate is not a word
TESS_ARGS = ["--psm", "13", "--oem", "1", "-c", f"tessedit_char_whitelist={WHITELIST}"]
# the line is read at several sizes and spacings in one tesseract run; the reads vote
VARIANTS = ((32, 0.12), (40, 0.25), (28, 0.2))
# hOCR with a box and a confidence (0-100) per character: tesseract's word confidence means
# nothing on a raw line (psm 13 scores most words 0), its characters' confidences do
HOCR_ARGS = ["-c", "hocr_char_boxes=1", "hocr"]
_CHAR = re.compile(r"x_conf ([0-9.]+)'>([^<]*)</span>")
TESS_ENV = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one tesseract per request: OpenMP threads only contend
MAX_CANDIDATES = 6
# A plate read whose surest read has a character below this confidence (tesseract's 0-100) is not
# charged: its stay goes to review. Rendered plates read right score 64-100 (most above 85); a
# smudged glyph read as a plate character (``#`` as ``4``) scores under 50.
MIN_CONFIDENCE = 60.0
CONFIDENCE_ENV = "SPRIGHT_PLATE_MIN_CONFIDENCE"


def min_confidence() -> float:
    """The review threshold: ``SPRIGHT_PLATE_MIN_CONFIDENCE`` (0-100; 0 never reviews), else ``MIN_CONFIDENCE``."""
    value = os.environ.get(CONFIDENCE_ENV)
    if not value:
        return MIN_CONFIDENCE
    threshold = float(value)
    if not 0 <= threshold <= 100:
        raise ValueError(f"{CONFIDENCE_ENV}={value!r}: a confidence from 0 to 100")
    return threshold


@dataclass(frozen=True)
class Line:
    """One tesseract read of one line image: its text and its least sure character's confidence (0-100)."""

    text: str
    confidence: float


@dataclass(frozen=True)
class Reading:
    """What recognition found: the plate as read (None when unreadable), the key it is matched by
    (``plates.key``), how sure OCR was of it, where it is, and what OCR saw."""

    plate: str | None
    raw: str
    box: list[list[int]]  # the plate's four corners in the photo
    candidates: int
    reads: list[str]  # every raw OCR read, for the record
    key: str | None = None
    confidence: float = 0.0  # the lowest character confidence of the surest read of the plate (0-100)


def _plate_like(rect: tuple, image_area: int) -> float:
    """A score for a rotated rectangle: 0 unless it has a plate's proportions and size."""
    (_, _), (w, h), _ = rect
    if w < h:
        w, h = h, w
    if h < 10 or w * h < image_area * 0.002 or w * h > image_area * 0.25:
        return 0.0
    aspect = w / h
    return max(0.0, 1.0 - abs(aspect - 4.7) / 2.5)


def candidates(gray: np.ndarray) -> list[tuple]:
    """Rotated rectangles that may be plates, best first."""
    area = gray.shape[0] * gray.shape[1]
    found: list[tuple[float, tuple]] = []
    # (a) bright rectangles: the plate's background against the car body
    blur = cv2.GaussianBlur(gray, (5, 5), 0)
    for block in (31, 61):
        binary = cv2.adaptiveThreshold(blur, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, -10)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 5)))
        found += _rects(binary, area, fill_weight=True)
    # (b) text regions: dark strokes on a light ground, merged horizontally
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (21, 7)))
    grad = np.absolute(cv2.Sobel(blackhat, cv2.CV_32F, 1, 0, ksize=3))
    grad = cv2.normalize(grad, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    grad = cv2.morphologyEx(cv2.GaussianBlur(grad, (5, 5), 0), cv2.MORPH_CLOSE,
                            cv2.getStructuringElement(cv2.MORPH_RECT, (17, 5)))
    _, binary = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    binary = cv2.dilate(cv2.erode(binary, None, iterations=1), None, iterations=2)
    found += _rects(binary, area, fill_weight=False)
    found.sort(key=lambda item: -item[0])
    unique: list[tuple] = []
    for _, rect in found:
        if not any(_same(rect, other) for other in unique):
            unique.append(rect)
    return unique[:MAX_CANDIDATES]


def _rects(binary: np.ndarray, area: int, fill_weight: bool) -> list[tuple[float, tuple]]:
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        rect = cv2.minAreaRect(contour)
        score = _plate_like(rect, area)
        if score <= 0:
            continue
        if fill_weight:  # a bright rectangle fills its bounding rectangle; clutter does not
            (_, _), (w, h), _ = rect
            score *= min(1.0, cv2.contourArea(contour) / max(w * h, 1.0)) + 0.2
        out.append((score, rect))
    return out


def _same(a: tuple, b: tuple) -> bool:
    (ax, ay), (aw, ah), _ = a
    (bx, by), _, _ = b
    return abs(ax - bx) < max(aw, ah) * 0.15 and abs(ay - by) < min(aw, ah) * 0.5 + 2


def straighten(gray: np.ndarray, rect: tuple) -> np.ndarray:
    """Warp a rotated rectangle to an upright crop CROP_H high (perspective/rotation fix).

    The crop keeps the rectangle's proportions: stretched characters are what makes tesseract's
    LSTM read one wide glyph as two (``DZT`` as ``D2ZT``)."""
    (cx, cy), (w, h), angle = rect
    if w < h:  # make the long side the width, whatever OpenCV's angle convention
        w, h, angle = h, w, angle + 90
    # a margin: a text-region candidate is tight around the characters, and a plate's rim must stay whole
    w, h = w + h * 0.3, h * 1.3
    corners = cv2.boxPoints(((cx, cy), (w, h), angle))
    crop_w = int(CROP_H * w / h)
    corners = corners[np.argsort(corners[:, 1])]  # top two, then bottom two
    top = corners[:2][np.argsort(corners[:2, 0])]
    bottom = corners[2:][np.argsort(corners[2:, 0])]
    source = np.array([top[0], top[1], bottom[1], bottom[0]], dtype=np.float32)
    target = np.array([[0, 0], [crop_w - 1, 0], [crop_w - 1, CROP_H - 1], [0, CROP_H - 1]], dtype=np.float32)
    return cv2.warpPerspective(gray, cv2.getPerspectiveTransform(source, target), (crop_w, CROP_H),
                               flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


Glyph = tuple[int, int, int, int, int]  # x, y, w, h, component label


def segment(crop: np.ndarray) -> tuple[np.ndarray, list[Glyph]]:
    """The crop's characters as connected components, left to right, with the rim and dirt left out."""
    crop = cv2.GaussianBlur(crop, (3, 3), 0)
    _, binary = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    ink = 255 - binary
    width = ink.shape[1]
    # the rim's top and bottom: long straight lines that characters may touch; its sides are
    # dropped below for not matching the characters' height and top line
    rows = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (width // 3, 1)))
    ink[rows > 0] = 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink)
    glyphs = []
    for label in range(1, count):  # character-sized blobs only
        x, y, w, h, pixels = (int(v) for v in stats[label])
        if (0.18 * CROP_H <= h <= 0.9 * CROP_H and 0.12 * h <= w <= 0.7 * width and x > 0
                and x + w < width and pixels > 30):
            glyphs.append((x, y, w, h, label))
    if glyphs:  # plate characters share a height and a top line (J may reach lower); rim pieces and dirt do not
        height = float(np.median([g[3] for g in glyphs]))
        top = float(np.median([g[1] for g in glyphs]))
        glyphs = [g for g in glyphs if 0.8 * height <= g[3] <= 1.35 * height and abs(g[1] - top) <= 0.15 * height]
    return labels, sorted(glyphs)


def relayout(labels: np.ndarray, glyphs: list[Glyph], glyph_h: int = GLYPH_H, gap_ratio: float = 0.12) -> np.ndarray:
    """The characters redrawn black on white, side by side with an even gap, at a fixed height.

    tesseract's LSTM reads one glyph as two across the wide, uneven gaps of a plate (``D2ZT``
    for ``DZT``) and is sensitive to text size; an even line at a known size avoids both.
    """
    height = max(g[3] for g in glyphs)
    gap, pad = max(2, int(height * gap_ratio)), max(10, height // 2)
    out = np.full((height + 2 * pad, sum(g[2] for g in glyphs) + gap * (len(glyphs) - 1) + 2 * pad), 255, np.uint8)
    x_out, top = pad, min(g[1] for g in glyphs)
    for x, y, w, h, label in glyphs:
        y_out = pad + y - top
        h = min(h, out.shape[0] - y_out)
        out[y_out:y_out + h, x_out:x_out + w][labels[y:y + h, x:x + w] == label] = 0
        x_out += w + gap
    scale = glyph_h / height
    return cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)


def ocr_lines(images: list[np.ndarray]) -> list[Line]:
    """Read several one-line images in ONE tesseract run (a run costs ~100 ms of start-up alone),
    with each character's confidence (hOCR with character boxes: ``x_conf`` per glyph)."""
    with tempfile.TemporaryDirectory(prefix="spright-anpr-") as tmp:
        names = []
        for n, image in enumerate(images):
            names.append(os.path.join(tmp, f"{n}.png"))
            cv2.imwrite(names[-1], image)
        listing = os.path.join(tmp, "lines.txt")
        with open(listing, "w") as out:
            out.write("\n".join(names) + "\n")
        done = subprocess.run([pytesseract.pytesseract.tesseract_cmd, listing, "stdout", *TESS_ARGS, *HOCR_ARGS],
                              capture_output=True, text=True, env=TESS_ENV, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tesseract failed: {done.stderr.strip()[-300:]}")
    pages = done.stdout.split("class='ocr_page'")[1:]
    lines = []
    for page in pages[: len(images)]:
        glyphs = [(html.unescape(ch), float(conf)) for conf, ch in _CHAR.findall(page)]
        lines.append(Line("".join(ch for ch, _ in glyphs), min((c for _, c in glyphs), default=0.0)))
    return lines + [Line("", 0.0)] * (len(images) - len(lines))


def _clean(read: str) -> str:
    return "".join(ch for ch in read.upper() if ch.isalnum())


def vote(reads: list[Line], fmt: PlateFormat | None = None) -> tuple[str, str, float] | None:
    """The plate most reads agree on, as ``(plate as read, its key, confidence)``; on a tie, the
    one needing strictly fewer corrections.

    Reads vote by key (``plates.key``: in ``any``, ``RBW4009`` and ``R8W4009`` are one plate), and
    the winner is shown as most of its reads spelled it (ties: the surest spelling). Its confidence
    is that of its surest read: the lowest character confidence within that read.
    Valid but disagreeing reads with nothing to tell them apart are rejected: a wrong plate bills a stranger.
    """
    fmt = fmt or current()
    tally: dict[str, list[int]] = {}
    spellings: dict[str, dict[str, list[float]]] = {}
    for read in reads:
        fit = repair(read.text, fmt)
        if fit is not None:
            votes = tally.setdefault(key(fit[0], fmt), [0, 0])
            votes[0] += 1
            votes[1] += fit[1]
            spellings.setdefault(key(fit[0], fmt), {}).setdefault(fit[0], []).append(read.confidence)
    ranked = sorted(tally.items(), key=lambda item: (-item[1][0], item[1][1]))
    if not ranked:
        return None
    if len(ranked) == 1 or ranked[0][1][0] > ranked[1][1][0] or ranked[0][1][1] < ranked[1][1][1]:
        winner = ranked[0][0]
        plate = max(spellings[winner].items(), key=lambda item: (len(item[1]), max(item[1])))[0]
        return plate, winner, max(c for spelled in spellings[winner].values() for c in spelled)
    return None


def read_plate(image: np.ndarray, fmt: PlateFormat | None = None) -> Reading:
    """Locate and read the plate of one photo (CPU-bound and blocking: run it in a thread).

    With as many characters segmented as the format has, its digit group (``AB 12 CDE``,
    ``ABC 1234``) is also read on its own: tesseract's LSTM reads digits that follow letters as
    letters (``AL96`` as ``ALOG``), and without the letters beside them reads them right (letters,
    conversely, read best in the whole line). The whole-line letters with the lone digits vote first.
    """
    fmt = fmt or current()
    group = fmt.digits
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    rects = candidates(gray)
    first: tuple[list[str], list[list[int]]] | None = None
    for rect in rects:
        labels, glyphs = segment(straighten(gray, rect))
        if not (len(fmt.layout) - 2 if fmt.layout else 2) <= len(glyphs) <= 9:
            continue  # not a line of plate characters
        lines = [relayout(labels, glyphs, h, gap) for h, gap in VARIANTS]
        size = len(fmt.layout) if fmt.layout else 0
        if group is not None and len(glyphs) == size:  # the digits alone, at every variant
            lines += [relayout(labels, glyphs[group], h, gap) for h, gap in VARIANTS]
        found = ocr_lines(lines)
        whole = [Line(_clean(line.text), line.confidence) for line in found[:len(VARIANTS)]]
        digits = [Line(_clean(line.text), line.confidence) for line in found[len(VARIANTS):]]
        hybrid = [] if group is None else [
            Line(w.text[:group.start] + d.text + w.text[group.stop:], min(w.confidence, d.confidence))
            for w in whole for d in digits if len(w.text) == size and len(d.text) == group.stop - group.start]
        voted = vote(hybrid, fmt) or vote(whole, fmt)
        reads = [line.text for line in whole + hybrid]
        box = cv2.boxPoints(rect).round().astype(int).tolist()
        if voted is not None:
            plate, plate_key, confidence = voted
            return Reading(plate, reads[0], box, len(rects), reads, plate_key, round(confidence, 1))
        first = first or (reads, box)
    reads, box = first or ([], [])
    return Reading(None, reads[0] if reads else "", box, len(rects), reads)


__all__ = ["Line", "NotAnImage", "Reading", "decode", "min_confidence", "read_plate"]
