"""What the reference app needs from its environment, parsed once at `create_app` time.

The web runner (`millions web`) exports the environment before importing the app, so
every web server of a run agrees on the data directory and the upload limit.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from millions.shards import ShardsConfig
from millions.topology.app_env import DATA_DIR_ENV, SHARD_DCS_ENV, SHARDS_CONFIG_ENV

DEFAULT_DATA_DIR = Path(".millions/data")
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Decoded pixels an upload may have: 50 MP is more than any phone camera and keeps a
# decoded RGBA image near 200 MB, below Pillow's own decompression-bomb threshold.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


class SettingsError(ValueError):
    """An environment variable the app reads holds an unusable value."""


@dataclass(frozen=True)
class AppSettings:
    """Where the data lives, how big an upload may be and which server this is.

    The records live in the sharded database `shards` describes; without a shards config
    in the environment the app keeps two embedded (SQLite) shards under `data_dir`."""

    data_dir: Path
    max_upload_bytes: int
    component: str
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    shard_dcs: tuple[str, ...] = ()  # the DCs holding a copy of every shard (replication)

    def __post_init__(self) -> None:
        if self.shards.engine == "sqlite" and not self.shards.directory:
            directory = str((self.data_dir / "shards").resolve())
            shards = self.shards.model_copy(update={"directory": directory})
            object.__setattr__(self, "shards", shards)

    @property
    def photos_dir(self) -> Path:
        return self.data_dir / "photos"


def settings_from_env(
    env: Mapping[str, str],
    data_dir: Path | None = None,
    max_upload_bytes: int | None = None,
) -> AppSettings:
    """Explicit arguments win; otherwise MILLIONS_DATA_DIR / MILLIONS_MAX_UPLOAD_BYTES."""
    if data_dir is None:
        data_dir = Path(env.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    if max_upload_bytes is None:
        raw = env.get("MILLIONS_MAX_UPLOAD_BYTES", "").strip()
        if raw:
            try:
                max_upload_bytes = int(raw)
            except ValueError:
                raise SettingsError(
                    f"MILLIONS_MAX_UPLOAD_BYTES must be a whole number of bytes, got {raw!r}"
                ) from None
        else:
            max_upload_bytes = DEFAULT_MAX_UPLOAD_BYTES
    if max_upload_bytes < 1:
        raise SettingsError(f"max upload size must be at least 1 byte, got {max_upload_bytes}")
    component = env.get("MILLIONS_COMPONENT") or socket.gethostname()
    return AppSettings(
        data_dir=data_dir,
        max_upload_bytes=max_upload_bytes,
        component=component,
        shards=shards_from_env(env),
        shard_dcs=tuple(dc for dc in env.get(SHARD_DCS_ENV, "").split(",") if dc),
    )


def shards_from_env(env: Mapping[str, str]) -> ShardsConfig:
    """The shards config exported by `export_shards_config`, else the default one."""
    raw = env.get(SHARDS_CONFIG_ENV, "").strip()
    if not raw:
        return ShardsConfig()
    try:
        return ShardsConfig.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise SettingsError(f"{SHARDS_CONFIG_ENV}: {where}: {first['msg']}") from None


def current_settings(
    data_dir: Path | None = None, max_upload_bytes: int | None = None
) -> AppSettings:
    """`settings_from_env` over this process's environment."""
    return settings_from_env(os.environ, data_dir, max_upload_bytes)
