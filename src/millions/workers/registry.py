"""Task handlers by queue name: `tasks = TaskRegistry()` and `@tasks.task("photo.process")`.

A registry is an ordinary object (not a module global), so an app can have several, tests
build their own, and the worker process imports the one it is told to
(`module:attribute`). A handler receives the `Delivery` (payload, attempt, idempotency
key); returning means done, raising means failed (retried with backoff, then
dead-lettered), raising `PermanentFailure` dead-letters at once. Handlers may be
`async def` (run on the worker's event loop) or plain functions (run in a thread, for
CPU-bound or blocking work such as image processing).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from millions.import_path import ImportPathError, import_object
from millions.queue.base import Delivery
from millions.queue.messages import check_queue_name

Handler = Callable[[Delivery], Awaitable[None]] | Callable[[Delivery], None]
H = TypeVar("H", bound=Handler)


class PermanentFailure(Exception):
    """Raised by a handler for a message that can never succeed: dead-letter it now."""


class TaskImportError(Exception):
    """The `module:attribute` naming a task registry cannot be imported."""


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    handler: Handler
    is_async: bool

    async def __call__(self, delivery: Delivery) -> None:
        if self.is_async:
            result = self.handler(delivery)
            assert inspect.isawaitable(result)
            await result
        else:
            await asyncio.to_thread(self.handler, delivery)


class TaskRegistry:
    """Handlers by task name; the task name is the queue the worker consumes."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def task(self, name: str) -> Callable[[H], H]:
        """Register the decorated function as the handler of queue `name`."""
        check_queue_name(name)

        def register(handler: H) -> H:
            if name in self._tasks:
                raise ValueError(f"task {name!r} already has a handler")
            if not callable(handler):
                raise TypeError(f"the handler of task {name!r} is not callable")
            is_async = inspect.iscoroutinefunction(handler)
            self._tasks[name] = Task(name, handler, is_async)
            return handler

        return register

    @property
    def names(self) -> list[str]:
        return sorted(self._tasks)

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise KeyError(f"no task {name!r}; registered: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


def load_registry(path: str) -> TaskRegistry:
    """Import `module:attribute` and check it is a `TaskRegistry` with tasks."""
    try:
        target = import_object(path, "tasks")
    except ImportPathError as exc:
        raise TaskImportError(str(exc)) from None
    if not isinstance(target, TaskRegistry):
        raise TaskImportError(f"tasks: {path} is a {type(target).__name__}, not a TaskRegistry")
    if not target.names:
        raise TaskImportError(f"tasks: {path} has no tasks registered")
    return target
