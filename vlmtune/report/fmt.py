"""How the report writes numbers, intervals, p-values and settings (the documents and the console alike)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

TEXT_CAP = 400  # characters of a prediction shown in a table cell
MISSING = "(missing)"  # a fingerprint key present in only one run


def num(x: Any, digits: int = 3) -> str:
    """A number to `digits` decimals; n/a for anything else (None, NaN, bool)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x):
        return "n/a"
    return f"{x:.{digits}f}"


def ci_str(ci: Any) -> str:
    """[lo, hi] to 3 decimals; [n/a] when there is no interval."""
    return f"[{num(ci[0])}, {num(ci[1])}]" if ci else "[n/a]"


def format_p(p: Any) -> str:
    """p-values in 3 significant digits (tests and the console use the same format)."""
    return f"{p:.3g}" if isinstance(p, (int, float)) and not math.isnan(p) else "n/a"


def as_text(value: Any) -> str:
    """A cell's value as text: strings as they are, anything else as JSON (3, null, ["a", "b"])."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def short(text: Any, cap: int = TEXT_CAP) -> str:
    """as_text, cut at `cap` characters with the number cut off stated."""
    s = as_text(text)
    return s if len(s) <= cap else s[:cap] + f"… (+{len(s) - cap} chars)"


def show(v: Any) -> str:
    """A setting's value as the user wrote it in JSON (null, "text", [224, 224])."""
    return v if v is MISSING else json.dumps(v, ensure_ascii=False, default=str)


def jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN/inf become null (strict JSON readers choke on NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def entry_cell(e: dict[str, Any]) -> str:
    """A metric entry's value and interval: '0.047 [0.028, 0.077]'."""
    return f"{num(e.get('value'))} {ci_str(e.get('ci'))}"


def n_text(n: Any, clusters: Any) -> str:
    """'300', or '300 in 100 groups' when examples share groups."""
    if n is None:
        return "n/a"
    return f"{n}" if clusters is None or clusters == n else f"{n} in {clusters} groups"


def each(values: Sequence[str], labels: Sequence[str]) -> str:
    """One value when every run has the same, else each run's: 'zero-shot: a; fine-tuned: b'."""
    if len(set(values)) == 1:
        return values[0]
    return "; ".join(f"{label}: {v}" for label, v in zip(labels, values))


def method_of(e: dict[str, Any]) -> str:
    """The interval's method as the entry names it."""
    return str(e.get("method") or "not stated in metrics.json")


def mde_text(mde: dict[str, Any]) -> str:
    """The minimum detectable difference of a `paired_mde` result: '±0.083', or 'none up to 1'."""
    return "none up to 1" if mde.get("mde") is None else f"±{mde['mde']:.3f}"
