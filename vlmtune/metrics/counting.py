"""Counting metrics: exact accuracy, off-by-one accuracy, MAE, RMSE, with bootstrap CIs.

Parse-failure policy (a failure is a prediction of None; it is never replaced by a guess):
  - accuracy and off_by_one are over ALL rows; a failure counts as wrong.
  - mae and rmse are over parsed rows only (a failure has no error size); their "n" says how many,
    and `parse_failures` / `parse_failure_rate` say how many were left out.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vlmtune.stats import bootstrap_ci, metric_entry

PARSE_FAILURE = "parse_failure"
POLICY = ("accuracy and off_by_one are over all rows, parse failures counted wrong; "
          "mae and rmse are over parsed rows only")

_NAN_CI = (float("nan"), float("nan"))


def _rms(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """sqrt(mean(x)) for squared errors (takes axis= so the bootstrap stays vectorised)."""
    return np.sqrt(np.mean(x, axis=axis))


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
    return {"labels": labels, "pred_labels": labels + [PARSE_FAILURE], "matrix": mat.tolist(),
            "rows": "gold", "columns": "predicted"}


def count_metrics(gold: Sequence[int], pred: Sequence[int | None], n_boot: int = 2000,
                  seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Metrics dict for counts. `pred[i]` is None where the answer could not be parsed.

    Keys: accuracy, off_by_one, mae, rmse, parse_failure_rate (entries {"value", "ci", "n"}),
    parse_failures (int), confusion (dict), parse_failure_policy (str).
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length: {len(gold)} vs {len(pred)}")
    g = np.array([int(x) for x in gold], dtype=float)
    failed = np.array([p is None for p in pred], dtype=bool)
    p = np.array([np.nan if x is None else int(x) for x in pred], dtype=float)

    err = np.abs(p - g)                      # NaN where parsing failed
    exact = (err == 0).astype(float)         # NaN == 0 is False: failures count as wrong
    near = (err <= 1).astype(float)
    abs_err = err[~failed]
    sq_err = abs_err ** 2

    def entry(values: np.ndarray, stat=np.mean) -> dict[str, Any]:
        if values.size == 0:
            return metric_entry(float("nan"), _NAN_CI, 0)
        return metric_entry(stat(values), bootstrap_ci(values, stat, n_boot, alpha, seed), values.size)

    return {
        "accuracy": entry(exact),
        "off_by_one": entry(near),
        "mae": entry(abs_err),
        "rmse": entry(sq_err, _rms),
        "parse_failure_rate": entry(failed.astype(float)),
        "parse_failures": int(failed.sum()),
        "confusion": count_confusion(gold, pred),
        "parse_failure_policy": POLICY,
    }
