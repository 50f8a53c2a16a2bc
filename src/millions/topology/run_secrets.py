"""Secrets shared by every process of one run, kept in files only the owner can read.

A secret is generated once per run directory (so every web server signs cookies with the
same key, and the supervisor, the edges and the app agree on the admin token) and kept
across restarts of the topology in the same directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def run_secret(path: Path) -> str:
    """The secret in `path`, created (mode 0600) on first use; safe against concurrent starts."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(candidate)
    return candidate
