"""Images in HTTP bodies: raw (``Content-Type: image/jpeg``) or ``multipart/form-data`` parts.

Cameras post raw JPEGs; browsers and ``curl -F`` post forms. Both apps accept either, and a
body that is neither an image nor a form carrying one is a 415 that says what to send.
"""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP

import cv2
import numpy as np

from spright import Context, HTTPError

MAX_SIDE = 1280  # larger photos are scaled down first: plates stay readable, work stays bounded
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF8", b"RIFF")


class NotAnImage(ValueError):
    """The bytes are not an image OpenCV can decode."""


def decode(data: bytes | memoryview) -> np.ndarray:
    """Decode JPEG/PNG/... bytes into a BGR image, at most MAX_SIDE pixels wide; raises NotAnImage."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise NotAnImage("the body is not an image OpenCV can decode (send a JPEG or PNG)")
    scale = MAX_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def looks_like_image(data: bytes | memoryview) -> bool:
    head = bytes(data[:8])
    return any(head.startswith(magic) for magic in IMAGE_MAGIC)


def form_parts(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The (field name, bytes) of every part of a multipart/form-data body, in order."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise HTTPError(400, "malformed multipart/form-data body")
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        parts.append((part.get_param("name", header="content-disposition") or "", payload or b""))
    return parts


def images(ctx: Context, want: int) -> list[bytes | memoryview]:
    """``want`` images from the request: the raw body (``want`` == 1) or a form's image parts.

    The raw body is returned as the slot's memoryview: decoding reads it in place, no copy.
    """
    content_type = ctx.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        found = [data for _, data in form_parts(ctx.bytes(), content_type) if looks_like_image(data)]
    elif len(ctx.body) == 0:
        raise HTTPError(400, f"empty body: send {'an image' if want == 1 else f'{want} images'}")
    else:
        found = [ctx.body] if looks_like_image(ctx.body) else []
    if len(found) < want:
        what = "a JPEG or PNG body (or a multipart/form-data image part)" if want == 1 else \
            f"{want} images as multipart/form-data parts"
        raise HTTPError(415, f"expected {what}; got {len(found)} image(s)")
    return found[:want]
