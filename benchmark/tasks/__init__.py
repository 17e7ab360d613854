"""The benchmark's tasks: one registry, one vocabulary (histosynth.benchmark.tasks.meta). `histosynth bench <task>`,
the suite and the results files all name a task the same way; each task is a class (BenchmarkTask) that declares its
CLI options, what it applies to in the suite, and how it runs.

    from histosynth.benchmark.tasks import get_task
    get_task("distribution").meta.version
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from histosynth.benchmark.tasks.meta import ALIASES, META_BY_NAME, TASK_METAS, TaskMeta
from histosynth.registry import Registry

if TYPE_CHECKING:
    from histosynth.benchmark.tasks.base import BenchmarkTask

TASKS: Registry[type["BenchmarkTask"]] = Registry("benchmark task")
for _meta in TASK_METAS:
    TASKS.register(_meta.name, _meta.target, _meta.summary)


def canonical_name(name: str) -> str:
    """A task's name from its name or an old alias (unknown names raise, suggesting the closest)."""
    name = ALIASES.get(name, name)
    if name not in META_BY_NAME:
        TASKS.get(name)  # raises RegistryError, naming the closest tasks
    return name


def get_task(name: str) -> "BenchmarkTask":
    """An instance of the task called `name` (or an old alias of it)."""
    return TASKS.get(canonical_name(name))()


def suite_tasks() -> list[TaskMeta]:
    """The tasks the suite runs, in order."""
    return [meta for meta in TASK_METAS if meta.in_suite]


__all__ = ["TASKS", "TASK_METAS", "TaskMeta", "canonical_name", "get_task", "suite_tasks"]
