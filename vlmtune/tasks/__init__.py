"""Tasks: one module per task, each a `Task` subclass registered with `@TASKS.register("name")`.

    from vlmtune.tasks import build_task
    task = build_task("count")                                   # or build_task("classify", {"labels": [...]})
    task.parse("There are 3 red shapes.", example)               # Parsed(value=3, ok=True, raw=...)

The registry finds the built-in tasks by reading this package's source; nothing registers by being imported.
"""

from __future__ import annotations

from vlmtune.tasks.base import Parsed, ReportSection, Task, build_task, options_dict

__all__ = ["Parsed", "ReportSection", "Task", "build_task", "options_dict"]
