"""Classification metrics: accuracy, macro/weighted precision-recall-F1, per-class report, confusion.

Point estimates come from scikit-learn. Accuracy and the parse-failure rate are proportions: Wilson intervals
(design-effect adjusted when a group repeats, `vlmtune.stats.proportion_entry`). Precision, recall and F1 get
bootstrap CIs that resample groups, from a vectorised, weighted re-implementation of sklearn's formulas (2,000
sklearn calls per metric would take seconds), checked against sklearn in the tests.

Parse-failure policy (a failure is a prediction of None; it is never replaced by a guess):
  - accuracy counts a failure as wrong.
  - For precision/recall/F1 a failure is a prediction of no class: it is a false negative for the gold
    class (lowers recall) and a false positive for no class. It appears as the "parse_failure"
    column of the confusion matrix.
  - Macro and weighted averages run over the classes that occur in the gold labels or in the parsed
    predictions (scikit-learn's default class set), with zero_division=0.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

from vlmtune.stats import (
    bootstrap_method,
    cluster_bootstrap_distribution,
    clusters_of,
    metric_entry,
    nan_entry,
    percentile_ci,
    proportion_entry,
)

PARSE_FAILURE = "parse_failure"
POLICY = (
    "accuracy counts parse failures wrong; in precision/recall/F1 a failure is a false negative "
    "for the gold class; averages over classes present in gold or parsed predictions"
)
# order of the columns returned by batch_scores
SCORE_NAMES = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "parse_failure_rate",
)
PROPORTIONS = ("accuracy", "parse_failure_rate")  # the rest are not proportions: bootstrap intervals


def label_space(
    gold: Sequence[Hashable], pred: Sequence[Hashable | None], labels: Sequence[Hashable] | None = None
) -> list[Hashable]:
    """The declared labels in their order, then any other gold/predicted label (sorted by text)."""
    out = list(dict.fromkeys(labels or []))
    extra = {x for x in gold} | {x for x in pred if x is not None}
    out += sorted(extra - set(out), key=str)
    return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape, dtype=float), where=den > 0)


def batch_scores(t: np.ndarray, p: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """All SCORE_NAMES for a batch of resamples, sklearn semantics.

    t, p: [b, n] class indices (or [n], broadcast against `weights`); gold in [0, k), predictions in [0, k]
    where k = parse failure. weights: [b, n] how often each example is in each resample (None: once).
    Returns [b, len(SCORE_NAMES)].
    """
    t, p = np.atleast_2d(t), np.atleast_2d(p)
    w = np.ones(t.shape) if weights is None else np.atleast_2d(weights).astype(float)
    t, p = np.broadcast_to(t, w.shape), np.broadcast_to(p, w.shape)
    b = w.shape[0]
    off = (np.arange(b) * (k + 1))[:, None]  # [b, 1]: one bincount for the whole batch

    def counts(x: np.ndarray) -> np.ndarray:
        flat = np.bincount(x.ravel(), weights=w.ravel(), minlength=b * (k + 1))
        return flat.reshape(b, k + 1)[:, :k]  # [b, k]

    true_n = counts(t + off)
    pred_n = counts(p + off)  # failures land in column k and are dropped
    hit = t == p  # gold is never k, so a failure is never a hit
    tp = counts(np.where(hit, t + off, off + k))  # [b, k]; non-hits go to the dropped column

    prec, rec = _safe_div(tp, pred_n), _safe_div(tp, true_n)
    f1 = _safe_div(2 * tp, true_n + pred_n)
    present = (true_n + pred_n) > 0  # [b, k]
    n_present = present.sum(axis=1)
    support = true_n.sum(axis=1)

    def macro(x: np.ndarray) -> np.ndarray:
        return _safe_div((x * present).sum(axis=1), n_present)

    def weighted(x: np.ndarray) -> np.ndarray:
        return _safe_div((x * true_n).sum(axis=1), support)

    total = w.sum(axis=1)
    acc = (hit * w).sum(axis=1) / total
    fail = ((p == k) * w).sum(axis=1) / total
    return np.stack(
        [acc, macro(prec), macro(rec), macro(f1), weighted(prec), weighted(rec), weighted(f1), fail], axis=1
    )


def classification_metrics(
    gold: Sequence[Hashable],
    pred: Sequence[Hashable | None],
    labels: Sequence[Hashable] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Metrics dict for single-label classification. `pred[i]` is None where parsing failed; `groups[i]` is the
    example's group (None: every example its own group).

    Keys: accuracy, macro_precision, macro_recall, macro_f1, weighted_precision, weighted_recall,
    weighted_f1, parse_failure_rate (entries {"value", "ci", "n", "clusters", "method"}); parse_failures (int);
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
    confusion = {"labels": space, "pred_labels": space + [PARSE_FAILURE], "rows": "gold", "columns": "predicted"}
    if n == 0:
        out: dict[str, Any] = {
            name: nan_entry("wilson" if name in PROPORTIONS else bootstrap_method(n_boot, clusters_of(None, 0)))
            for name in SCORE_NAMES
        }
        out.update(
            parse_failures=0,
            per_class={},
            confusion={**confusion, "matrix": [[0] * (k + 1)] * k},
            parse_failure_policy=POLICY,
        )
        return out

    present = sorted(set(t.tolist()) | set(p[p < k].tolist()))
    values = {"accuracy": accuracy_score(t, p), "parse_failure_rate": fails / n}
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(t, p, labels=present, average=avg, zero_division=0)
        values.update({f"{avg}_precision": pr, f"{avg}_recall": rc, f"{avg}_f1": f1})
    names = [str(space[i]) for i in present]
    report = classification_report(t, p, labels=present, target_names=names, output_dict=True, zero_division=0)
    per_class = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in names
    }
    # gold is never a failure, so the failure row is dropped: [k, k + 1]
    matrix = confusion_matrix(t, p, labels=list(range(k + 1)))[:k]

    cl = clusters_of(groups, n)
    reps = cluster_bootstrap_distribution(lambda w: batch_scores(t, p, k, w), n, cl, n_boot, seed)
    out = {}
    for j, name in enumerate(SCORE_NAMES):
        if name in PROPORTIONS:
            out[name] = proportion_entry(t == p if name == "accuracy" else p == k, groups=groups, alpha=alpha)
        else:
            out[name] = metric_entry(
                values[name],
                percentile_ci(reps[:, j], alpha, cl.count),
                n,
                clusters=cl.count,
                method=bootstrap_method(n_boot, cl),
            )
    out.update(
        parse_failures=fails,
        per_class=per_class,
        confusion={**confusion, "matrix": matrix.tolist()},
        parse_failure_policy=POLICY,
    )
    return out
