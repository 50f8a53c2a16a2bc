"""The images the photo pipeline derives from an upload. Pure: bytes in, bytes out.

* `thumb`: the whole photo scaled down to at most 256 px on its longer side;
* `crop`: the centre square, at most 1024 px a side;
* `sharpen` and `blur`: the photo at most 1024 px on its longer side, filtered.

Variants keep the photo's format (a JPEG gives JPEGs), so they are served with the
photo's content type. They are display-sized: filtering a 50-megapixel original would
take seconds and nobody views it that way. Output is deterministic for given bytes, so
a redelivered job rewrites identical files.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageFilter, ImageOps

VARIANTS = ("thumb", "crop", "sharpen", "blur")
THUMB_SIDE = 256
DISPLAY_SIDE = 1024
BLUR_RADIUS = 4.0
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def _thumb(image: Image.Image) -> Image.Image:
    return _fit_within(image, THUMB_SIDE)


def _crop(image: Image.Image) -> Image.Image:
    side = min(image.size)
    square = ImageOps.fit(image, (side, side), centering=(0.5, 0.5))
    return _fit_within(square, DISPLAY_SIDE)


def _sharpen(image: Image.Image) -> Image.Image:
    return _fit_within(image, DISPLAY_SIDE).filter(ImageFilter.SHARPEN)


def _blur(image: Image.Image) -> Image.Image:
    return _fit_within(image, DISPLAY_SIDE).filter(ImageFilter.GaussianBlur(BLUR_RADIUS))


MAKERS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "thumb": _thumb,
    "crop": _crop,
    "sharpen": _sharpen,
    "blur": _blur,
}


def _fit_within(image: Image.Image, side: int) -> Image.Image:
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return copy


def _working_copy(image: Image.Image, fmt: str) -> Image.Image:
    """RGB, or RGBA where the format keeps transparency (filters refuse palette images)."""
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha and fmt != "JPEG":
        return image.convert("RGBA")
    return image.convert("RGB")


def render_variants(data: bytes, content_type: str) -> dict[str, bytes]:
    """Every variant of the image `data` (already validated at upload), encoded."""
    fmt = FORMATS[content_type]
    with Image.open(io.BytesIO(data)) as original:
        original.load()
        image = _working_copy(ImageOps.exif_transpose(original), fmt)
    rendered: dict[str, bytes] = {}
    for name in VARIANTS:
        out = io.BytesIO()
        MAKERS[name](image).save(out, fmt)
        rendered[name] = out.getvalue()
    return rendered
