"""Photo bytes as files under `<data_dir>/photos/`, named by their SHA-256.

Content addressing makes a photo file immutable and its write idempotent: two web
servers storing the same bytes write the same name, and a file is published with an
atomic rename only after it is fully on disk, so no reader ever sees half a photo.
Files are written before the database row that names them, so a row never points at
a missing file (a crash in between leaves an unreferenced file, which is harmless).

The pipeline's variants (thumbnail, crop, ...) are named by the original's hash and the
variant (`<sha256>.<variant>.<ext>`), written the same way before the photo is marked
processed: a redelivered job finds them present, and equal bytes share them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from millions.app.images import EXTENSIONS


class PhotoFiles:
    """Reads and writes photo files under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str, content_type: str) -> Path:
        """Where the bytes with this hash live (a two-level fan-out keeps folders small)."""
        return self.root / sha256[:2] / f"{sha256}.{EXTENSIONS[content_type]}"

    def variant_path(self, sha256: str, content_type: str, variant: str) -> Path:
        """Where a variant of the photo with this hash lives."""
        return self.root / sha256[:2] / f"{sha256}.{variant}.{EXTENSIONS[content_type]}"

    def write(self, sha256: str, content_type: str, data: bytes) -> Path:
        """Store `data` durably under its hash (blocking: call it from a thread)."""
        return write_once(self.path(sha256, content_type), data)

    def write_variant(self, sha256: str, content_type: str, variant: str, data: bytes) -> Path:
        """Store a variant durably (blocking: call it from a thread)."""
        return write_once(self.variant_path(sha256, content_type, variant), data)


def write_once(target: Path, data: bytes) -> Path:
    """Publish `data` at `target` with an atomic rename unless it is already there."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
