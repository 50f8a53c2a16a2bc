"""The photo-sharing reference app run by the stateless web tier (`millions.app:app`)."""

from millions.app.main import create_app

app = create_app()

__all__ = ["app", "create_app"]
