"""Counting metrics: exact accuracy, off-by-one accuracy, MAE, RMSE, each with its interval.

Intervals: accuracy, off_by_one and parse_failure_rate are proportions (Wilson, design-effect adjusted when a
group repeats: `vlmtune.stats.proportion_entry`); MAE and RMSE use the bootstrap, resampling groups.

Parse-failure policy (a failure is a prediction of None; it is never replaced by a guess):
  - accuracy and off_by_one are over ALL rows; a failure counts as wrong.
  - mae and rmse are over parsed rows only (a failure has no error size); their "n" says how many,
    and `parse_failures` / `parse_failure_rate` say how many were left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmtune.stats import bootstrap_entry, proportion_entry

PARSE_FAILURE = "parse_failure"
POLICY = (
    "accuracy and off_by_one are over all rows, parse failures counted wrong; mae and rmse are over parsed rows only"
)


def count_confusion(gold: Sequence[int], pred: Sequence[int | None]) -> dict[str, Any]:
    """Confusion counts for integer answers: rows = gold, columns = predicted + a parse-failure column.

    labels = sorted union of gold and parsed values (so the square part is sklearn's
    confusion_matrix(gold, pred, labels=labels) over parsed rows).
    """
    labels = sorted({int(g) for g in gold} | {int(p) for p in pred if p is not None})
    pos = {v: i for i, v in enumerate(labels)}
    mat = np.zeros((len(labels), len(labels) + 1), dtype=int)  # [gold, pred + failure]
    for g, p in zip(gold, pred):
        mat[pos[int(g)], len(labels) if p is None else pos[int(p)]] += 1
    return {
        "labels": labels,
        "pred_labels": labels + [PARSE_FAILURE],
        "matrix": mat.tolist(),
        "rows": "gold",
        "columns": "predicted",
    }


def count_metrics(
    gold: Sequence[int],
    pred: Sequence[int | None],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Metrics dict for counts. `pred[i]` is None where the answer could not be parsed; `groups[i]` is the
    example's group (None: every example its own group).

    Keys: accuracy, off_by_one, mae, rmse, parse_failure_rate (entries {"value", "ci", "n", "clusters",
    "method"}), parse_failures (int), confusion (dict), parse_failure_policy (str).
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length: {len(gold)} vs {len(pred)}")
    g = np.array([int(x) for x in gold], dtype=float)
    failed = np.array([p is None for p in pred], dtype=bool)
    p = np.array([np.nan if x is None else int(x) for x in pred], dtype=float)

    err = np.abs(p - g)  # NaN where parsing failed
    exact = (err == 0).astype(float)  # NaN == 0 is False: failures count as wrong
    near = (err <= 1).astype(float)
    abs_err = err[~failed]
    parsed_groups = None if groups is None else [x for x, f in zip(groups, failed) if not f]
    boot: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "alpha": alpha}

    return {
        "accuracy": proportion_entry(exact, groups=groups, alpha=alpha),
        "off_by_one": proportion_entry(near, groups=groups, alpha=alpha),
        "mae": bootstrap_entry(abs_err, parsed_groups, **boot),
        "rmse": bootstrap_entry(abs_err**2, parsed_groups, transform=np.sqrt, **boot),
        "parse_failure_rate": proportion_entry(failed, groups=groups, alpha=alpha),
        "parse_failures": int(failed.sum()),
        "confusion": count_confusion(gold, pred),
        "parse_failure_policy": POLICY,
    }
