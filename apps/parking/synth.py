"""Synthetic car photos with licence plates, and their ground truth, for tests and the accuracy report.

Real gate-camera photos cannot ship with the repo, so we render scenes whose difficulty we
control: a car somewhere in the frame, its plate at a varied position, scale and small
rotation, under uneven lighting, sensor noise, blur and JPEG compression. Every image comes
with the plate text it shows, so OCR accuracy is measured, not guessed.

``python -m apps.parking.synth --count 20 --out DIR`` writes ``DIR/*.jpg`` and ``DIR/truth.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from apps.parking.plates import PlateFormat, fleet, random_plate, spaced

# Debian's fonts-dejavu-core: a clean, bold, narrow sans close enough to plate lettering for OCR.
FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
              "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf")
PLATE_COLOURS = ((245, 245, 240), (250, 210, 40))  # white front plates, yellow rear plates
CAR_COLOURS = ((30, 30, 35), (150, 20, 25), (20, 50, 120), (110, 115, 120), (200, 200, 205), (25, 90, 45))


@dataclass(frozen=True)
class Sample:
    """One rendered photo: the JPEG bytes and what it shows."""

    plate: str
    jpeg: bytes
    box: tuple[int, int, int, int]  # the plate's axis-aligned bounding box (x0, y0, x1, y1) in the photo


def font_path() -> str:
    """The first installed plate font (fonts-dejavu-core, which the Makefile installs)."""
    for path in FONT_PATHS:
        if Path(path).exists():
            return path
    raise FileNotFoundError("no DejaVu font found: install Debian's fonts-dejavu-core")


def render_plate(plate: str, height: int, colour: tuple[int, int, int], fmt: PlateFormat | None = None) -> Image.Image:
    """The plate alone, upright: UK proportions (about 4.7:1), a dark rim, the text centred."""
    width = int(height * 4.7)
    image = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(image)
    rim = max(2, height // 25)
    draw.rounded_rectangle((rim, rim, width - rim - 1, height - rim - 1), radius=height // 8,
                           outline=(20, 20, 20), width=rim)
    text = spaced(plate, fmt)
    size = int(height * 0.7)
    while True:  # characters stand apart, as on real plates, and keep clear of the rim
        font = ImageFont.truetype(font_path(), size)
        gap = size * 0.1
        widths = [draw.textlength(ch, font=font) for ch in text]
        if sum(widths) + gap * (len(text) - 1) <= width * 0.86:
            break
        size -= 1
    _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
    x = (width - sum(widths) - gap * (len(text) - 1)) / 2
    y = (height - (bottom - top)) / 2 - top
    for ch, w in zip(text, widths, strict=True):
        draw.text((x, y), ch, fill=(15, 15, 15), font=font)
        x += w + gap
    return image


def _scene(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Background: a sky-to-tarmac gradient with a few random blobs (walls, signs, shadows)."""
    w, h = size
    top, ground = np.array([rng.randint(90, 200)] * 3), np.array([rng.randint(40, 110)] * 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    pixels = np.broadcast_to(top * (1 - ramp) + ground * ramp, (h, w, 3)).astype(np.uint8)
    image = Image.fromarray(pixels.copy())
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 6)):
        x, y = rng.randint(0, w), rng.randint(0, h)
        shade = tuple(rng.randint(40, 200) for _ in range(3))
        draw.rectangle((x, y, x + rng.randint(20, w // 3), y + rng.randint(20, h // 3)), fill=shade)
    return image


def _car(rng: random.Random, image: Image.Image, plate_image: Image.Image) -> tuple[int, int]:
    """Draw a car body around where the plate goes; returns the plate's centre."""
    w, h = image.size
    pw = plate_image.width
    car_w = int(pw * rng.uniform(2.6, 3.4))
    car_h = int(car_w * rng.uniform(0.55, 0.7))
    cx = rng.randint(car_w // 2 + 5, max(car_w // 2 + 6, w - car_w // 2 - 5))
    cy = rng.randint(car_h // 2 + 5, max(car_h // 2 + 6, h - car_h // 2 - 5))
    draw = ImageDraw.Draw(image)
    body = rng.choice(CAR_COLOURS)
    draw.rounded_rectangle((cx - car_w // 2, cy - car_h // 2, cx + car_w // 2, cy + car_h // 2),
                           radius=car_h // 5, fill=body)
    glass = tuple(max(0, c - 25) for c in (60, 70, 80))
    draw.rectangle((cx - car_w // 3, cy - car_h // 2 + car_h // 10, cx + car_w // 3, cy - car_h // 8), fill=glass)
    for side in (-1, 1):  # lamps either side of the plate
        lx = cx + side * (car_w // 2 - car_w // 8)
        draw.ellipse((lx - car_w // 14, cy - car_h // 14, lx + car_w // 14, cy + car_h // 14), fill=(230, 120, 30))
    return cx, cy + car_h // 5


def render_car(plate: str, rng: random.Random, size: tuple[int, int] = (640, 480),
               fmt: PlateFormat | None = None) -> Sample:
    """A photo of a car showing ``plate``: varied position, scale, tilt, lighting, noise and blur."""
    image = _scene(rng, size)
    plate_image = render_plate(plate, rng.randint(30, 52), rng.choice(PLATE_COLOURS), fmt)
    cx, cy = _car(rng, image, plate_image)
    tilted = plate_image.convert("RGBA").rotate(rng.uniform(-7, 7), resample=Image.BICUBIC, expand=True)
    x0, y0 = cx - tilted.width // 2, cy - tilted.height // 2
    image.paste(tilted, (x0, y0), tilted)
    pixels = np.asarray(image).astype(np.float32)
    h, w = pixels.shape[:2]
    gx, gy = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
    light = rng.uniform(0.6, 1.15) + rng.uniform(-0.25, 0.25) * gx + rng.uniform(-0.2, 0.2) * gy
    pixels = pixels * light[..., None] + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 9),
                                                                                          pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randint(70, 92))
    return Sample(plate, out.getvalue(), (x0, y0, x0 + tilted.width, y0 + tilted.height))


def samples(count: int, seed: int = 1, fmt: PlateFormat | None = None) -> list[Sample]:
    """``count`` photos, reproducible from ``seed``: half registered vehicles, half visitors,
    with plates of ``fmt`` (the configured format by default)."""
    rng = random.Random(seed)
    known = fleet(fmt=fmt)
    return [render_car(rng.choice(known) if rng.random() < 0.5 else random_plate(rng, fmt), rng, fmt=fmt)
            for _ in range(count)]


def main(argv: list[str] | None = None) -> None:
    """Write photos and their ground truth to a directory (for curl, the replayer or other tools)."""
    parser = argparse.ArgumentParser(prog="python -m apps.parking.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for n, sample in enumerate(samples(args.count, args.seed)):
        name = f"car-{n:04d}.jpg"
        (args.out / name).write_bytes(sample.jpeg)
        truth[name] = sample.plate
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1))
    print(f"wrote {args.count} photos and truth.json to {args.out}")


if __name__ == "__main__":
    main()
