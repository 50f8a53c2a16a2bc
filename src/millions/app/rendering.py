"""HTML pages from Jinja2 templates, with what every page shows: who answered, the CSRF token.

Static files are linked with a content-hash query (`/static/style.css?v=1a2b3c4d5e`), so
a new release gets new URLs and caches (the CDN edge, browsers) never serve stale CSS.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from millions.app import csrf
from millions.app.state import session_of
from millions.app.urls import image_url, page_url

PACKAGE_DIR = Path(__file__).parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"


class Renderer:
    """Renders the app's pages for one web server."""

    def __init__(self, component: str) -> None:
        self.component = component
        self._versions = {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:10]
            for path in STATIC_DIR.iterdir()
            if path.is_file()
        }
        self._templates = Jinja2Templates(
            directory=TEMPLATES_DIR, context_processors=[self._common]
        )

    def static_url(self, name: str) -> str:
        version = self._versions.get(name)
        return f"/static/{name}" if version is None else f"/static/{name}?v={version}"

    def _common(self, request: Request) -> dict[str, Any]:
        def csrf_token() -> str:
            return csrf.session_token(session_of(request))

        return {
            "served_by": self.component,
            "static_url": self.static_url,
            "csrf_token": csrf_token,
            "csrf_field": csrf.FORM_FIELD,
            "image_url": image_url,
            "page_url": page_url,
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
