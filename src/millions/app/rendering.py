"""HTML pages from Jinja2 templates, with what every page shows: who answered, the CSRF token.

Static files are linked by content-hashed names (`/static/style.1a2b3c4d5e.css`) served
with a one-year `immutable` lifetime: a release that changes a file changes its URL, so
caches (the CDN edge, browsers) never serve stale CSS and a deploy needs no purge. Assets
and photos are linked through the CDN edge of the server's region while it is up
(`CdnLinks`), and from the origin while it is down.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from millions.app import csrf
from millions.app.state import app_state, session_of
from millions.app.urls import image_url, page_url, profile_url, variant_url
from millions.app.variants import VARIANTS

PACKAGE_DIR = Path(__file__).parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
HASHED_CACHE_CONTROL = "public, max-age=31536000, immutable"
PLAIN_CACHE_CONTROL = "public, max-age=3600"
MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class StaticAssets:
    """The app's static files and their content-hashed names, read once at start."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.files = {path.name: path for path in directory.iterdir() if path.is_file()}
        self.hashed = {
            name: _hashed_name(path.name, hashlib.sha256(path.read_bytes()).hexdigest()[:10])
            for name, path in self.files.items()
        }
        self._by_hashed_name = {hashed: name for name, hashed in self.hashed.items()}

    def path_of(self, name: str) -> str:
        """The URL path a page links `name` by (its hashed name when it is one of ours)."""
        return f"/static/{self.hashed.get(name, name)}"

    def resolve(self, requested: str) -> tuple[Path, str] | None:
        """The file and Cache-Control for a requested name, or None when there is none."""
        name = self._by_hashed_name.get(requested)
        if name is not None:
            return self.files[name], HASHED_CACHE_CONTROL
        if requested in self.files:
            return self.files[requested], PLAIN_CACHE_CONTROL
        return None


def _hashed_name(name: str, digest: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{digest}.{suffix}" if dot else f"{name}.{digest}"


class Renderer:
    """Renders the app's pages for one web server."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.assets = StaticAssets()
        self._templates = Jinja2Templates(
            directory=TEMPLATES_DIR, context_processors=[self._common]
        )

    def _common(self, request: Request) -> dict[str, Any]:
        cdn = app_state(request).cdn

        def csrf_token() -> str:
            return csrf.session_token(session_of(request))

        def static_url(name: str) -> str:
            return cdn.url(self.assets.path_of(name))

        def cdn_image_url(photo_id: int) -> str:
            return cdn.url(image_url(photo_id))

        def cdn_variant_url(photo_id: int, variant: str) -> str:
            return cdn.url(variant_url(photo_id, variant))

        return {
            "served_by": self.component,
            "static_url": static_url,
            "csrf_token": csrf_token,
            "csrf_field": csrf.FORM_FIELD,
            "image_url": cdn_image_url,
            "variant_url": cdn_variant_url,
            "variants": VARIANTS,
            "page_url": page_url,
            "profile_url": profile_url,
        }

    def page(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return self._templates.TemplateResponse(
            request, name, context or {}, status_code=status, headers=headers
        )


def renderer_of(request: Request) -> Renderer:
    renderer = getattr(request.app.state, "renderer", None)
    assert isinstance(renderer, Renderer), "create_app() sets app.state.renderer"
    return renderer
