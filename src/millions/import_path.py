"""The object a config key names as `module:attribute` (the web tier's app, a worker's
task registry), with errors that say which part is wrong."""

from __future__ import annotations

import importlib
from typing import Any


class ImportPathError(Exception):
    """`module:attribute` does not name an importable object; the message says why."""


def import_object(path: str, key: str) -> Any:
    """Import `path` (`module:attr` or `module:attr.sub`); errors start with `key`."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ImportPathError(f"{key}: expected module:attribute, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportPathError(f"{key}: cannot import module {module_name!r}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportPathError(f"{key}: module {module_name!r} has no {attribute!r}") from None
    return target
