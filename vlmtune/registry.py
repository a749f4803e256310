"""One lazy registry kind for every plugin: tasks, data formats, metrics and model families.

A built-in plugin is one file: a module in the registry's package whose class or function carries the
registry's decorator. The registry finds these by reading the package's source (no import), so listing
names (`vlmtune ls`, did-you-mean errors, help texts) imports nothing, and a plugin is imported only
when it is used:

    # vlmtune/tasks/count.py
    @TASKS.register("count", help="count objects in an image; answer is an integer")
    class CountTask(Task): ...

    TASKS.get("count")      # imports vlmtune.tasks.count and returns CountTask
    TASKS.get("cuont")      # ConfigError: unknown task 'cuont'. Did you mean 'count'? Available: ...

Plugins outside vlmtune add entries three ways (lm-evaluation-harness style):
- a Python entry point in the group `vlmtune.<kind>s` (e.g. `vlmtune.tasks`), `name = "pkg.module:Attr"`;
- the environment variable VLMTUNE_PLUGINS: comma-separated modules imported once, which call
  `TASKS.register(...)` (or `@TASKS.register("name")`) themselves;
- `TASKS.register("name", obj_or_"module:attr")` in your own code before calling vlmtune.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from vlmtune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> plugins, imported on first use."""

    def __init__(self, kind: str, var: str, packages: tuple[str, ...]):
        self.kind = kind
        self.var = var  # the module-level name plugins decorate with: @<var>.register("name")
        self.packages = packages  # where built-in plugins live (read, not imported, to list them)
        # name -> ("module:attribute", one-line help); help is kept here so listing imports nothing.
        self._entries: dict[str, tuple[str, str]] = {}
        self._loaded: dict[str, T] = {}
        self._extras: dict[str, str] = {}  # name -> the pip extra a plugin needs (`register(..., extra="hf")`)
        self._external_done = False

    @property
    def group(self) -> str:
        return "vlmtune." + self.kind.replace(" ", "_") + "s"

    def register(self, name: str, target: Any = None, *, help: str = "", extra: str | None = None) -> Any:
        """Add `name`: `target` is an object or "module:attr"; without a target, a decorator. `extra`: the
        optional dependency group (vlmtune.extras) the plugin needs, so checks can name it without importing."""
        if extra:
            self._extras[name] = extra

        def add(obj: Any) -> Any:
            if isinstance(obj, str):
                if name in self._entries and self._entries[name][0] != obj:
                    raise ValueError(f"{self.kind} '{name}' is registered twice: {self._entries[name][0]} and {obj}")
                self._entries[name] = (obj, help)
                return obj
            current = self._loaded.get(name)
            if current is not None and current is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice: {current!r} and {obj!r}")
            doc = help or ((getattr(obj, "__doc__", None) or "").strip().splitlines() or [""])[0]
            self._entries[name] = (f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', name)}", doc)
            self._loaded[name] = obj
            return obj

        return add if target is None else add(target)

    def _scan_builtins(self) -> None:
        """Find `@<var>.register("name", help=...)` on top-level classes and functions of the packages."""
        for package in self.packages:
            spec = importlib.util.find_spec(package)
            for folder in (spec.submodule_search_locations or []) if spec else []:
                for path in sorted(Path(folder).glob("*.py")):
                    for name, attr, help, extra in _decorated(path, self.var):
                        self._entries.setdefault(name, (f"{package}.{path.stem}:{attr}", help))
                        if extra:
                            self._extras.setdefault(name, extra)

    def _load_external(self) -> None:
        """Built-ins (read from source), entry points of this registry's group, VLMTUNE_PLUGINS modules; once."""
        if self._external_done:
            return
        self._external_done = True
        self._scan_builtins()
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            self._entries.setdefault(ep.name, (ep.value, ""))
        for module in filter(None, (m.strip() for m in os.environ.get("VLMTUNE_PLUGINS", "").split(","))):
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ConfigError(
                    f"VLMTUNE_PLUGINS names module '{module}', which cannot be imported ({e}); "
                    "fix the name or put its folder on PYTHONPATH"
                ) from None

    def get(self, name: str) -> T:
        self._load_external()
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Available: {', '.join(self.names())}")
        target = self._entries[name][0]
        module, _, attr = target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        self._loaded[name] = obj
        return obj

    def check(self, name: str) -> None:
        """ConfigError with a did-you-mean if `name` is not registered (imports nothing)."""
        self._load_external()
        if name not in self._entries:
            self.get(name)

    def names(self) -> list[str]:
        self._load_external()
        return sorted(self._entries)

    def extra_of(self, name: str) -> str | None:
        """The pip extra plugin `name` needs, or None (read from its decorator: nothing is imported)."""
        self._load_external()
        return self._extras.get(name)

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._entries[n][1]) for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._load_external()
        return name in self._entries


def _decorated(path: Path, var: str) -> list[tuple[str, str, str, str | None]]:
    """(name, attribute, help, extra) of each top-level def/class in `path` decorated with
    `@<var>.register("name", ...)`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for deco in node.decorator_list:
            if (
                isinstance(deco, ast.Call)
                and isinstance(deco.func, ast.Attribute)
                and deco.func.attr == "register"
                and isinstance(deco.func.value, ast.Name)
                and deco.func.value.id == var
                and deco.args
                and isinstance(deco.args[0], ast.Constant)
                and isinstance(deco.args[0].value, str)
            ):
                kw = {k.arg: k.value.value for k in deco.keywords if isinstance(k.value, ast.Constant)}
                help, extra = kw.get("help"), kw.get("extra")
                doc = (ast.get_docstring(node) or "").strip().splitlines()
                found.append(
                    (
                        deco.args[0].value,
                        node.name,
                        help if isinstance(help, str) else (doc[0] if doc else ""),
                        extra if isinstance(extra, str) else None,
                    )
                )
    return found


TASKS: Registry[Any] = Registry("task", "TASKS", ("vlmtune.tasks",))
FORMATS: Registry[Callable[..., Any]] = Registry("data format", "FORMATS", ("vlmtune.data.formats",))
# Metrics a task can choose by name (e.g. dialog's `metrics: [bleu, rouge, cider, bertscore]`).
METRICS: Registry[Callable[..., dict]] = Registry("metric", "METRICS", ("vlmtune.metrics",))
# Model families: the architectures vlmtune knows how to recognise, template and stand in for (--smoke).
FAMILIES: Registry[Any] = Registry("model family", "FAMILIES", ("vlmtune.models.families",))
