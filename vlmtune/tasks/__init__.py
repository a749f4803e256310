"""Tasks: one module per task, each registering itself in `vlmtune.registry.TASKS` on import.

    from vlmtune.tasks import get_task
    task = get_task("count")
    task.parse("There are 3 red shapes.", example)   # Parsed(value=3, ok=True, raw=...)

Add a new task module to the import line below so that it registers.
"""

from __future__ import annotations

from typing import Any

from vlmtune.registry import TASKS
from vlmtune.tasks import caption, classify, count, dialog, mcq  # noqa: F401  (import = register)
from vlmtune.tasks.base import Parsed

__all__ = ["Parsed", "get_task", "TASKS"]


def get_task(name: str, **kwargs: Any) -> Any:
    """An instance of the task registered as `name` (kwargs go to its constructor, e.g. labels=[...])."""
    return TASKS.get(name)(**kwargs)
