"""Is an upload a real JPEG, PNG or WebP image, and how big is it? No I/O.

The decision rests on what Pillow decodes, never on the file name or the declared
content type. `Image.verify()` checks structure (PNG chunk CRCs) but does not decode
JPEG data, so a truncated JPEG passes it; a full `load()` afterwards decodes every
pixel and fails on truncation. Dimensions are checked against a pixel budget before
decoding, so a small file that expands to gigabytes (a decompression bomb) is refused
without allocating it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


@dataclass(frozen=True)
class ImageInfo:
    """What the app stores about accepted image bytes."""

    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str


class ImageRejected(Exception):
    """The bytes are not an acceptable image; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Decode `data` fully and describe it, or raise ImageRejected (415 or 413)."""
    if not data:
        raise ImageRejected(415, "the photo is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            content_type = CONTENT_TYPES.get(probe.format or "")
            if content_type is None:
                raise ImageRejected(
                    415, f"{probe.format} images are not accepted; upload a JPEG, PNG or WebP"
                )
            _check_pixels(probe.size, max_pixels)
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(413, f"the image has too many pixels to process: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected(415, "the file is not a JPEG, PNG or WebP image") from None
    except Exception as exc:
        # Pillow's decoders report corrupt or truncated input with many exception types
        # (OSError, SyntaxError, ValueError, struct.error, ...): all mean a bad upload.
        raise ImageRejected(415, f"the image is damaged or truncated ({exc})") from None
    return ImageInfo(
        content_type=content_type,
        width=width,
        height=height,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageRejected(
            413,
            f"the image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted",
        )
