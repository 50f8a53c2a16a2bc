"""Where a photo lives on the site: one place, used by the JSON API and the templates."""

from __future__ import annotations


def image_url(photo_id: int) -> str:
    return f"/photos/{photo_id}/image"


def page_url(photo_id: int) -> str:
    return f"/p/{photo_id}"


def variant_url(photo_id: int, variant: str) -> str:
    return f"/photos/{photo_id}/{variant}"


def profile_url(username: str) -> str:
    return f"/u/{username}"
