"""Classification metrics: accuracy, macro/weighted precision-recall-F1, per-class report, confusion.

Point estimates come from scikit-learn; bootstrap CIs use a vectorised re-implementation of the same
formulas (2,000 sklearn calls per metric would take seconds), checked against sklearn in the tests.

Parse-failure policy (a failure is a prediction of None; it is never replaced by a guess):
  - accuracy counts a failure as wrong.
  - For precision/recall/F1 a failure is a prediction of no class: it is a false negative for the gold
    class (lowers recall) and a false positive for no class. It appears as the "parse_failure"
    column of the confusion matrix.
  - Macro and weighted averages run over the classes that occur in the gold labels or in the parsed
    predictions (scikit-learn's default class set), with zero_division=0.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix,
                             precision_recall_fscore_support)

from vlmtune.stats import bootstrap_distribution, metric_entry, percentile_ci

PARSE_FAILURE = "parse_failure"
POLICY = ("accuracy counts parse failures wrong; in precision/recall/F1 a failure is a false negative "
          "for the gold class; averages over classes present in gold or parsed predictions")
# order of the columns returned by batch_scores
SCORE_NAMES = ("accuracy", "macro_precision", "macro_recall", "macro_f1",
               "weighted_precision", "weighted_recall", "weighted_f1", "parse_failure_rate")


def label_space(gold: Sequence[Hashable], pred: Sequence[Hashable | None],
                labels: Sequence[Hashable] | None = None) -> list[Hashable]:
    """The declared labels in their order, then any other gold/predicted label (sorted by text)."""
    out = list(dict.fromkeys(labels or []))
    extra = {x for x in gold} | {x for x in pred if x is not None}
    out += sorted(extra - set(out), key=str)
    return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape, dtype=float), where=den > 0)


def batch_scores(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """All SCORE_NAMES for a batch of resamples, sklearn semantics.

    t, p: [b, n] class indices; gold in [0, k), predictions in [0, k] where k = parse failure.
    Returns [b, len(SCORE_NAMES)].
    """
    t, p = np.atleast_2d(t), np.atleast_2d(p)
    b = t.shape[0]
    off = (np.arange(b) * (k + 1))[:, None]  # [b, 1]: one bincount for the whole batch

    def counts(x: np.ndarray) -> np.ndarray:
        return np.bincount(x.ravel(), minlength=b * (k + 1)).reshape(b, k + 1)[:, :k]  # [b, k]

    true_n = counts(t + off)
    pred_n = counts(p + off)           # failures land in column k and are dropped
    hit = t == p                       # gold is never k, so a failure is never a hit
    tp = counts(np.where(hit, t + off, off + k))  # [b, k]; non-hits go to the dropped column

    prec, rec = _safe_div(tp, pred_n), _safe_div(tp, true_n)
    f1 = _safe_div(2 * tp, true_n + pred_n)
    present = (true_n + pred_n) > 0    # [b, k]
    n_present = present.sum(axis=1)
    support = true_n.sum(axis=1)

    def macro(x: np.ndarray) -> np.ndarray:
        return _safe_div((x * present).sum(axis=1), n_present)

    def weighted(x: np.ndarray) -> np.ndarray:
        return _safe_div((x * true_n).sum(axis=1), support)

    acc = hit.mean(axis=1)
    fail = (p == k).mean(axis=1)
    return np.stack([acc, macro(prec), macro(rec), macro(f1),
                     weighted(prec), weighted(rec), weighted(f1), fail], axis=1)


def classification_metrics(gold: Sequence[Hashable], pred: Sequence[Hashable | None],
                           labels: Sequence[Hashable] | None = None, n_boot: int = 2000, seed: int = 0,
                           alpha: float = 0.05) -> dict[str, Any]:
    """Metrics dict for single-label classification. `pred[i]` is None where parsing failed.

    Keys: accuracy, macro_precision, macro_recall, macro_f1, weighted_precision, weighted_recall,
    weighted_f1, parse_failure_rate (entries {"value", "ci", "n"}); parse_failures (int);
    per_class {label: {"precision", "recall", "f1", "support"}}; confusion {"labels", "pred_labels",
    "matrix"} (rows = gold, columns = predicted + "parse_failure"); parse_failure_policy (str).
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length: {len(gold)} vs {len(pred)}")
    space = label_space(gold, pred, labels)
    k = len(space)
    pos = {lab: i for i, lab in enumerate(space)}
    t = np.array([pos[g] for g in gold], dtype=int)
    p = np.array([k if x is None else pos[x] for x in pred], dtype=int)
    n = len(t)
    fails = int((p == k).sum())
    confusion = {"labels": space, "pred_labels": space + [PARSE_FAILURE], "rows": "gold",
                 "columns": "predicted"}
    if n == 0:
        out = {name: metric_entry(float("nan"), (float("nan"), float("nan")), 0) for name in SCORE_NAMES}
        out.update(parse_failures=0, per_class={}, confusion={**confusion, "matrix": [[0] * (k + 1)] * k},
                   parse_failure_policy=POLICY)
        return out

    present = sorted(set(t.tolist()) | set(p[p < k].tolist()))
    values = {"accuracy": accuracy_score(t, p), "parse_failure_rate": fails / n}
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(t, p, labels=present, average=avg, zero_division=0)
        values.update({f"{avg}_precision": pr, f"{avg}_recall": rc, f"{avg}_f1": f1})
    names = [str(space[i]) for i in present]
    report = classification_report(t, p, labels=present, target_names=names, output_dict=True,
                                   zero_division=0)
    per_class = {name: {"precision": float(report[name]["precision"]), "recall": float(report[name]["recall"]),
                        "f1": float(report[name]["f1-score"]), "support": int(report[name]["support"])}
                 for name in names}
    # gold is never a failure, so the failure row is dropped: [k, k + 1]
    matrix = confusion_matrix(t, p, labels=list(range(k + 1)))[:k]

    reps = bootstrap_distribution(n, lambda idx: batch_scores(t[idx], p[idx], k), n_boot, seed)
    out: dict[str, Any] = {}
    for j, name in enumerate(SCORE_NAMES):
        out[name] = metric_entry(values[name], percentile_ci(reps[:, j], alpha), n)
    out.update(parse_failures=fails, per_class=per_class, confusion={**confusion, "matrix": matrix.tolist()},
               parse_failure_policy=POLICY)
    return out
