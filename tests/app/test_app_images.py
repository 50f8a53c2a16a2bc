"""Image validation decodes the bytes: formats, damage, decompression bombs, junk."""

from __future__ import annotations

import pytest
from app_harness import image_bytes, png_bomb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millions.app.images import ImageRejected, inspect_image

LIMIT = 50_000_000


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type"),
    [
        ("JPEG", "RGB", "image/jpeg"),
        ("JPEG", "L", "image/jpeg"),
        ("PNG", "RGB", "image/png"),
        ("PNG", "L", "image/png"),
        ("WEBP", "RGB", "image/webp"),
    ],
)
def test_real_images_are_described(fmt: str, mode: str, content_type: str) -> None:
    data = image_bytes(fmt, (123, 45), mode)
    info = inspect_image(data, LIMIT)
    assert info.content_type == content_type
    assert (info.width, info.height) == (123, 45)
    assert info.size_bytes == len(data)
    assert len(info.sha256) == 64


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 415, "empty"),
        (b"GIF89a not really", 415, ""),
        (b"%PDF-1.7\n" + b"x" * 100, 415, "not a JPEG, PNG or WebP"),
        (image_bytes("GIF"), 415, "GIF images are not accepted"),
        (image_bytes("BMP"), 415, "BMP images are not accepted"),
        (image_bytes("JPEG", (200, 200))[:-300], 415, "damaged or truncated"),
        (image_bytes("JPEG", (200, 200))[:600], 415, "damaged or truncated"),
        (image_bytes("PNG", (200, 200))[:-30], 415, "damaged or truncated"),
        (image_bytes("WEBP", (200, 200))[:-50], 415, ""),
        (png_bomb(100_000, 100_000), 413, "too many pixels"),
    ],
)
def test_bad_uploads_are_refused_with_a_status_and_reason(
    data: bytes, status: int, message: str
) -> None:
    with pytest.raises(ImageRejected) as refused:
        inspect_image(data, LIMIT)
    assert refused.value.status == status
    assert message in refused.value.message


def test_images_over_the_pixel_budget_are_refused_before_decoding() -> None:
    data = png_bomb(8_000, 8_000)  # 64 MP: under Pillow's own bomb limit, over ours
    with pytest.raises(ImageRejected) as refused:
        inspect_image(data, LIMIT)
    assert refused.value.status == 413
    assert "8000x8000 pixels" in refused.value.message
    assert inspect_image(image_bytes("PNG", (10, 10)), 100).width == 10
    with pytest.raises(ImageRejected):
        inspect_image(image_bytes("PNG", (10, 11)), 100)


SAMPLES = [image_bytes(fmt, (24, 16)) for fmt in ("JPEG", "PNG", "WEBP")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
)
def test_damaged_images_never_escape_as_anything_but_a_refusal(
    sample: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(sample)
    for position, value in edits:
        data[position % len(data)] = value
    damaged = bytes(data[: max(1, cut % (len(data) + 1))])
    try:
        info = inspect_image(damaged, LIMIT)
    except ImageRejected as refused:
        assert refused.status in (413, 415)
    else:
        assert info.width > 0 and info.height > 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ImageRejected):
        inspect_image(data, LIMIT)
