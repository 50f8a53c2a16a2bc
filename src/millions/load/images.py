"""Small valid images to upload, generated once per (size, format, variant) and cached.

Pixels are seeded random noise: noise barely compresses, so the encoded size tracks the
requested size, and a few variants per size keep uploads from being byte-identical
without spending CPU on encoding during the run.
"""

from __future__ import annotations

import io
import math
import random
from functools import lru_cache
from typing import Literal

from PIL import Image

VARIANTS = 4
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
EXTENSIONS = {"jpeg": "jpg", "png": "png"}


@lru_cache(maxsize=64)
def generated_image(size_bytes: int, fmt: Literal["jpeg", "png"], variant: int) -> bytes:
    """A valid `fmt` image of roughly `size_bytes` (same arguments, same bytes)."""
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"image format must be 'jpeg' or 'png', got {fmt!r}")
    rng = random.Random(f"{size_bytes}:{fmt}:{variant}")
    base = tuple(rng.randrange(256) for _ in range(3))
    side = 16
    encoded = _encode(_noise(rng, side, base), fmt)
    # Encoded bytes grow with pixel count; two corrections land close to the target.
    for _ in range(2):
        bytes_per_pixel = len(encoded) / (side * side)
        side = max(8, math.isqrt(int(size_bytes / bytes_per_pixel)))
        encoded = _encode(_noise(rng, side, base), fmt)
    return encoded


def _noise(rng: random.Random, side: int, base: tuple[int, ...]) -> Image.Image:
    """Random pixels around a random base colour."""
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    return Image.blend(image, Image.new("RGB", (side, side), base), 0.25)


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=85)
    else:
        image.save(out, "PNG")
    return out.getvalue()
