"""Documented, bounded config fields: `_f(default, help, ge=..., ...)` and the checks of those bounds."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import field
from typing import Any

from vlmtune.errors import ConfigError


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A documented field. Numeric bounds go in kw (ge, gt, le, lt, not_zero) and are checked for every value a
    recipe, an override or code sets (`check_bounds`), so `vlmtune validate` catches them."""
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(type(default), default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


BOUNDS = {
    "ge": (">=", lambda v, b: v >= b),
    "gt": (">", lambda v, b: v > b),
    "le": ("<=", lambda v, b: v <= b),
    "lt": ("<", lambda v, b: v < b),
}


def bounds_text(meta: Any) -> str:
    """A field's bounds in words, e.g. '>= 0 and < 1', or '' when it has none."""
    parts = [f"{BOUNDS[k][0]} {meta[k]}" for k in BOUNDS if k in meta]
    if meta.get("not_zero"):
        parts.append("not 0")
    return " and ".join(parts)


def check_value(f: dataclasses.Field, value: Any, key: str) -> None:
    """ConfigError naming `key` when a numeric value is outside its field's bounds (or not finite)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    meta = f.metadata
    rule = bounds_text(meta)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"'{key}' is {value}; it must be a finite number{' ' + rule if rule else ''}. "
            f"Fix: set {key} to a number{' ' + rule if rule else ''}"
        )
    ok = all(test(value, meta[k]) for k, (_, test) in BOUNDS.items() if k in meta)
    if ok and meta.get("not_zero") and value == 0:
        ok = False
    if not ok:
        help = meta.get("help", "")
        raise ConfigError(
            f"'{key}' is {value!r}; it must be {rule}"
            + (f" ({help})" if help else "")
            + f". Fix: set {key} to a value {rule}"
        )


def check_bounds(obj: Any, where: str) -> None:
    """Every numeric field of dataclass instance `obj` within its bounds; errors name `where.field`."""
    for f in dataclasses.fields(obj):
        check_value(f, getattr(obj, f.name), f"{where}.{f.name}" if where else f.name)
