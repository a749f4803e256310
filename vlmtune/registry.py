"""One registry pattern for every plugin kind (tasks, data formats, models, metrics).

    TASKS = Registry("task")
    @TASKS.register("count")
    class CountTask: ...
    TASKS.get("cuont")  # ConfigError: unknown task 'cuont'. Did you mean 'count'? Available: ...
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from vlmtune.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str | None = None) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice: {self._items[name]!r} and {obj!r}")
            self._items[name] = obj
            doc = help if help is not None else (obj.__doc__ or "").strip().splitlines()[0:1]
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return deco

    def get(self, name: str) -> Any:
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Available: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._help.get(n, "")) for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._items


TASKS = Registry("task")
FORMATS = Registry("data format")
MODELS = Registry("model")
METRICS = Registry("metric")
