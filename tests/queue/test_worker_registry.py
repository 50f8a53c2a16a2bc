"""Task registration and loading a registry by import path."""

from __future__ import annotations

import pytest

from millions.queue.base import Delivery
from millions.workers.registry import TaskImportError, TaskRegistry, load_registry

empty_registry = TaskRegistry()
not_a_registry = {"photo.process": print}


def test_tasks_register_under_their_queue_name() -> None:
    tasks = TaskRegistry()

    @tasks.task("photo.process")
    async def process(delivery: Delivery) -> None:
        return None

    @tasks.task("mail.send")
    def send(delivery: Delivery) -> None:
        return None

    assert tasks.names == ["mail.send", "photo.process"]
    assert "photo.process" in tasks and len(tasks) == 2
    assert tasks.get("photo.process").handler is process
    assert tasks.get("photo.process").is_async
    assert not tasks.get("mail.send").is_async
    with pytest.raises(KeyError, match=r"registered: mail\.send, photo\.process"):
        tasks.get("nope")


def test_two_registries_are_independent() -> None:
    first, second = TaskRegistry(), TaskRegistry()
    first.task("a")(print)
    assert "a" not in second


def test_a_name_has_one_handler_and_must_be_a_valid_queue_name() -> None:
    tasks = TaskRegistry()
    tasks.task("a")(print)
    with pytest.raises(ValueError, match="already has a handler"):
        tasks.task("a")(print)
    with pytest.raises(ValueError, match="queue name"):
        tasks.task("has space")


def test_loading_by_import_path() -> None:
    loaded = load_registry("queue_worker_tasks:tasks")
    assert loaded.names == ["work"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("no_colon", "expected module:attribute"),
        (":tasks", "expected module:attribute"),
        ("missing_module_xyz:tasks", "cannot import module"),
        ("queue_worker_tasks:nothing", "has no 'nothing'"),
        ("test_worker_registry:not_a_registry", "is a dict, not a TaskRegistry"),
        ("test_worker_registry:empty_registry", "no tasks registered"),
    ],
)
def test_bad_import_paths_say_what_is_wrong(path: str, problem: str) -> None:
    with pytest.raises(TaskImportError, match=problem):
        load_registry(path)
