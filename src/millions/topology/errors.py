"""The one error every config loader raises, so each tier's config can use it."""

from __future__ import annotations


class ConfigError(Exception):
    """A config problem, as one line: `<key>: <problem>`."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem
